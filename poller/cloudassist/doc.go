// Package cloudassist is the only package of capoller that lists through
// the Alibaba Cloud SDK (cmd/capoller still builds credential providers
// with it). It lists Cloud Assistant invocations — ECS
// DescribeInvocations (fully or incrementally) and
// DescribeInvocationResults, SWAS DescribeCommandInvocations — through the
// real SDK and returns them as a complete, normalized [diff.Snapshot], or
// an error, never a partial snapshot; and it reads, redacts and bounds the
// runs' output that failure events carry (see [OutputOptions]).
//
// It also owns the translation of the SDK's errors into [*APIError], with a
// [Class] that tells the poller whether to back off, retry, restart the
// listing or give up (through [APIError.Throttled] and
// [APIError.Permanent]), and with every secret-bearing text (signed URLs,
// access key ids, security tokens) redacted.
package cloudassist
