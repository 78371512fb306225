package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// Print implements Report.
func (r *fanoutReport) Print(w io.Writer) {
	fmt.Fprintf(w, "fanout on %q at %s: %.0f events/s for %.0fs, %d B, ws codec %s\n",
		r.Channel, r.Addr, r.Rate, r.Duration, r.Size, r.WSCodec)
	c := r.Connect
	fmt.Fprintf(w, "connections  %d subscribed of %d in %.1fs; %d failed to subscribe, %d ended during the run\n",
		c.Subscribed, c.Attempted, c.Seconds, c.Failed, c.Ended)
	for _, e := range c.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	p := r.Publish
	fmt.Fprintf(w, "published    %d acked of %d sent (%d errors, %d late) at %.1f/s; ack p50 %.2f ms p99 %.2f ms; positions %d..%d\n",
		p.Acked, p.Sent, p.Errors, p.Late, p.PerSec, p.Ack.P50, p.Ack.P99, p.FirstPos, p.LastPos)
	d := r.Delivered
	drain := ""
	if d.DrainTimeout {
		drain = " (drain timed out: some subscribers never caught up)"
	}
	fmt.Fprintf(w, "delivered    %d events in %.2fs = %.0f events/s%s\n", d.Events, d.Seconds, d.PerSec, drain)
	if s := r.Server; s != nil {
		fmt.Fprintf(w, "server       pid %d: %.2f cores; VmRSS %d kB before, %d kB subscribed, %d kB after\n",
			s.PID, s.CPU, s.RSSBeforeKB, s.RSSSubscribedKB, s.RSSAfterKB)
	}
	fmt.Fprintf(w, "load tool    %.2f cores\n\n", r.ToolCPU)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "transport\tsubs\tevents\tp50 ms\tp99 ms\tmax ms\tmissing\tdup\tout of order\tunexpected\tbad frames\t")
	for _, t := range r.Transports {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%d\t%d\t%d\t%d\t%d\t\n",
			t.Name, t.Subscribers, t.Events, t.Latency.P50, t.Latency.P99, t.Latency.Max,
			t.Loss.Missing, t.Loss.Duplicate, t.Loss.OutOfOrder, t.Loss.Unexpected, t.ProtocolErrors)
	}
	tw.Flush()
	verdict(w, r.Failed(), "events lost or connections failed")
}

// Print implements Report.
func (r *idleReport) Print(w io.Writer) {
	sub := ""
	if r.Transport == transportWS && !r.Subscribed {
		sub = " (not subscribed)"
	}
	fmt.Fprintf(w, "idle: %d %s connections%s to %s, channel %q, settle %.0fs\n",
		r.Connections, r.Transport, sub, r.Addr, r.Channel, r.Settle)
	c := r.Connect
	fmt.Fprintf(w, "connections  %d open of %d in %.1fs; %d failed, %d ended on their own\n",
		c.Subscribed, c.Attempted, c.Seconds, c.Failed, c.Ended)
	for _, e := range c.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "process\tpid\tVmRSS before kB\tafter kB\tper conn kB\tRssAnon before kB\tafter kB\tthreads\t")
	for _, m := range []struct {
		name string
		m    *memStats
	}{{"server", r.Server}, {"load tool", &r.Tool}} {
		if m.m == nil {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.2f\t%d\t%d\t%d→%d\t\n", m.name, m.m.PID,
			m.m.RSSBeforeKB, m.m.RSSAfterKB, m.m.PerConnKB, m.m.AnonBeforeKB, m.m.AnonAfterKB,
			m.m.ThreadsBefore, m.m.ThreadsAfter)
	}
	tw.Flush()
	fmt.Fprintf(w, "drops        %d connections ended on their own\n", r.Drops)
	if r.Failed() {
		fmt.Fprintln(w, "\nFAIL: connections failed or dropped")
	} else {
		fmt.Fprintln(w, "\nPASS: every connection opened and stayed open")
	}
}

// verdict ends every summary: PASS, or FAIL and why.
func verdict(w io.Writer, failed bool, why string) {
	if failed {
		fmt.Fprintf(w, "\nFAIL: %s\n", why)
	} else {
		fmt.Fprintln(w, "\nPASS: every subscriber got every acknowledged event once, in order")
	}
}

// transportTable prints per-transport latency and the checker's counts.
func transportTable(w io.Writer, ts []transportStats) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "transport\tsubs\tevents\tp50 ms\tp99 ms\tmax ms\tmissing\tdup\tout of order\tunexpected\tbad frames\t")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%d\t%d\t%d\t%d\t%d\t\n",
			t.Name, t.Subscribers, t.Events, t.Latency.P50, t.Latency.P99, t.Latency.Max,
			t.Loss.Missing, t.Loss.Duplicate, t.Loss.OutOfOrder, t.Loss.Unexpected, t.ProtocolErrors)
	}
	tw.Flush()
}

func printConnect(w io.Writer, c connectStats) {
	fmt.Fprintf(w, "connections  %d subscribed of %d in %.1fs; %d failed to subscribe, %d ended during the run\n",
		c.Subscribed, c.Attempted, c.Seconds, c.Failed, c.Ended)
	for _, e := range c.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
}
