package services

import (
	"context"
	"errors"

	heraldv1 "github.com/heraldrt/herald/gen/herald/v1"
	"github.com/heraldrt/herald/internal/eventlog"
	"github.com/heraldrt/herald/internal/namespace"
	"github.com/heraldrt/herald/internal/wire"
)

// Publish appends one event for the caller in ctx and returns it once
// committed (or the earlier event of a duplicate idempotency key).
func (a *App) Publish(ctx context.Context, req *heraldv1.PublishRequest) (*heraldv1.PublishResponse, error) {
	pol, err := a.policy(ctx, actPublish, req.Channel)
	if err != nil {
		return nil, err
	}
	if err := a.checkUserRate(ctx); err != nil {
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
func (a *App) publish(ctx context.Context, reqs []publishReq) ([]publishResult, error) {
	out := make([]publishResult, len(reqs))
	ps := make([]eventlog.Publish, 0, len(reqs))
	idx := make([]int, 0, len(reqs)) // ps[j] is reqs[idx[j]]
	author := authorOf(ctx)
	for i, r := range reqs {
		p := eventlog.Publish{Channel: r.req.Channel, Type: r.req.Type, Data: r.req.Data, IdempotencyKey: r.req.IdempotencyKey,
			Author: author, Format: eventlog.Format(r.req.Format)}
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
	res, errs, err := a.log.Append(ctx, ps)
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
