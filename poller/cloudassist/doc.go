// Package cloudassist is the only code in capoller that imports the Alibaba
// Cloud SDK. It lists Cloud Assistant invocations (ECS DescribeInvocations
// today) through the real SDK and returns them as a complete, normalized
// [diff.Snapshot] — or an error, never a partial snapshot.
//
// It also owns the translation of the SDK's errors into [*APIError], with a
// [Class] that tells the poller whether to back off, retry, restart the
// listing or give up, and with every secret-bearing text (signed URLs,
// access key ids, security tokens) redacted.
package cloudassist
