package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Loss counts what one or more subscribers got wrong against the set of
// published positions. All four are zero when every subscriber received
// every published position exactly once and in order.
type Loss struct {
	// Missing counts published positions a subscriber never received.
	Missing int64 `json:"missing"`
	// Duplicate counts extra copies of a position already received.
	Duplicate int64 `json:"duplicate"`
	// OutOfOrder counts first receipts of a position lower than one
	// received before it.
	OutOfOrder int64 `json:"out_of_order"`
	// Unexpected counts positions that no acknowledged publish returned.
	Unexpected int64 `json:"unexpected"`
}

// Total is the sum of the counts.
func (l Loss) Total() int64 { return l.Missing + l.Duplicate + l.OutOfOrder + l.Unexpected }

func (l *Loss) add(o Loss) {
	l.Missing += o.Missing
	l.Duplicate += o.Duplicate
	l.OutOfOrder += o.OutOfOrder
	l.Unexpected += o.Unexpected
}

// checkDelivery compares what one subscriber received (got, in arrival
// order) with the published positions (want, ascending and distinct). seen
// is scratch space reused between calls; it is returned, possibly grown.
func checkDelivery(want, got []int64, seen []bool) (Loss, []bool) {
	if cap(seen) < len(want) {
		seen = make([]bool, len(want))
	}
	seen = seen[:len(want)]
	clear(seen)
	var l Loss
	maxIdx := -1
	for _, p := range got {
		i, ok := slices.BinarySearch(want, p)
		switch {
		case !ok:
			l.Unexpected++
		case seen[i]:
			l.Duplicate++
		default:
			seen[i] = true
			if i < maxIdx {
				l.OutOfOrder++
			} else {
				maxIdx = i
			}
		}
	}
	for _, s := range seen {
		if !s {
			l.Missing++
		}
	}
	return l, seen
}

// Latency summarises a set of durations.
type Latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// summarize sorts d in place and returns its percentiles.
func summarize(d []int64) Latency {
	slices.Sort(d)
	return Latency{
		N:   len(d),
		P50: ms(percentile(d, 0.50)),
		P99: ms(percentile(d, 0.99)),
		Max: ms(percentile(d, 1)),
	}
}

// percentile returns the q-quantile (0 < q <= 1) of sorted by the
// nearest-rank method: the smallest value with at least q of the values at
// or below it. It returns 0 for an empty slice.
func percentile(sorted []int64, q float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = max(rank, 1)
	rank = min(rank, len(sorted))
	return sorted[rank-1]
}

func ms(ns int64) float64 { return float64(ns) / float64(time.Millisecond) }

// procStatus returns the named fields of /proc/<pid>/status in kB (VmRSS,
// RssAnon, ...).
func procStatus(pid int, fields ...string) (map[string]int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	return parseStatus(b, fields...)
}

func parseStatus(b []byte, fields ...string) (map[string]int64, error) {
	out := make(map[string]int64, len(fields))
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || !slices.Contains(fields, name) {
			continue
		}
		v, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("status field %s: %w", name, err)
		}
		out[name] = n
	}
	for _, f := range fields {
		if _, ok := out[f]; !ok {
			return nil, fmt.Errorf("status has no field %s", f)
		}
	}
	return out, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// procCPU returns the user+system CPU time a process has used.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces; fields after it are
	// counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}
