// Package cloudassist is the only package of capoller that talks to the
// Alibaba Cloud SDK. It lists Cloud Assistant invocations — ECS
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
//
// And it owns how an account signs its calls: [Credentials] are an
// account's credential settings as a configuration file states them (an
// access key, an STS token, a RAM role to assume, the ECS instance's role
// or a CLI profile; references to variables and files, never a secret),
// [Credentials.Validate] checks their shape, and [Credentials.Provider]
// reads what they name into the SDK's provider, one per account, shared
// by its listers. Their errors name the variable or file, never a value.
package cloudassist
