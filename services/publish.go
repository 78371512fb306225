package services

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/metrics"
	"github.com/heraldrt/herald/internal/namespace"
	"github.com/heraldrt/herald/internal/telemetry"
	"github.com/heraldrt/herald/internal/wire"
)

// Publish appends one event for the caller in ctx and returns it once
// committed (or the earlier event of a duplicate idempotency key).
func (a *App) Publish(ctx context.Context, req *heraldv1.PublishRequest) (*heraldv1.PublishResponse, error) {
	pol, err := a.policy(ctx, actPublish, req.Channel)
	if err != nil {
		a.met.Published(metrics.ResultRefused, 1)
		return nil, err
	}
	if err := a.checkUserRate(ctx); err != nil {
		a.met.Published(metrics.ResultRefused, 1)
		return nil, err
	}
	res, err := a.publish(ctx, []publishReq{{req: req, pol: pol}})
	if err != nil {
		return nil, toConnect(a.logger, "publish", err)
	}
	if res[0].err != nil {
		return nil, toConnect(a.logger, "publish", res[0].err)
	}
	return res[0].resp, nil
}

// publishReq is an authorized publish and its channel's policy.
type publishReq struct {
	req *heraldv1.PublishRequest
	pol *namespace.Policy
}

type publishResult struct {
	resp *heraldv1.PublishResponse
	err  error
}

// publish appends reqs in order, in one call to the log. A publish the
// namespace rules refuse gets its own error; the others go ahead.
func (a *App) publish(ctx context.Context, reqs []publishReq) (out []publishResult, err error) {
	if a.met != nil {
		start := time.Now()
		defer func() { a.countPublished(ctx, start, len(reqs), out, err) }()
	}
	out = make([]publishResult, len(reqs))
	ps := make([]eventlog.Publish, 0, len(reqs))
	idx := make([]int, 0, len(reqs)) // ps[j] is reqs[idx[j]]
	author := authorOf(ctx)
	for i, r := range reqs {
		p := eventlog.Publish{Channel: r.req.Channel, Type: r.req.Type, Data: r.req.Data, IdempotencyKey: r.req.IdempotencyKey,
			Author: author, Format: eventlog.Format(r.req.Format), Tags: r.req.Tags}
		if err := checkData(r.req.Format, r.req.Data); err != nil {
			out[i].err = err
			continue
		}
		if err := a.prepare(ctx, &p, r.pol); err != nil {
			if !errors.Is(err, eventlog.ErrTooLarge) {
				return nil, err // the log failed: nothing is written
			}
			out[i].err = err
			continue
		}
		ps = append(ps, p)
		idx = append(idx, i)
	}
	if len(ps) == 0 {
		return out, nil
	}
	actx, span := telemetry.Start(ctx, "herald.append", trace.WithAttributes(attribute.Int("herald.events", len(ps))))
	res, errs, err := a.log.Append(actx, ps)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	if err != nil {
		return nil, err
	}
	for j, i := range idx {
		if errs != nil && errs[j] != nil {
			out[i].err = errs[j]
			continue
		}
		out[i].resp = &heraldv1.PublishResponse{Event: wire.EventProto(&res[j].Event), Duplicate: res[j].Duplicate}
	}
	return out, nil
}

// countPublished records the results of a publish call that began at start.
func (a *App) countPublished(ctx context.Context, start time.Time, n int, out []publishResult, err error) {
	if err != nil {
		a.met.Published(metrics.ResultFailed, n)
		return
	}
	var ok, dup, refused, failed int
	for _, r := range out {
		switch {
		case r.err == nil && r.resp.GetDuplicate():
			dup++
		case r.err == nil:
			ok++
		case errors.Is(r.err, eventlog.ErrUnavailable) || errors.Is(r.err, eventlog.ErrClosed):
			failed++
		default:
			refused++
		}
	}
	a.met.Published(metrics.ResultOK, ok)
	a.met.Published(metrics.ResultDuplicate, dup)
	a.met.Published(metrics.ResultRefused, refused)
	a.met.Published(metrics.ResultFailed, failed)
	d := time.Since(start)
	for range ok + dup {
		a.met.PublishDone(ctx, d)
	}
}
