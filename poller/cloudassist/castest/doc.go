// Package castest is an emulator of the Alibaba Cloud Cloud Assistant APIs,
// in the spirit of net/http/httptest: tests, the demo and the casim binary run
// it in process and talk to it over HTTP with the real SDK.
//
// It owns the wire protocol (RPC style, parameters in the query string or
// a form body, a signature verified on every request, nonce replay and
// timestamp skew rejected, Alibaba's JSON error shape and HTTP statuses), a
// simulated fleet of instances that run a tiny script language (below), and a
// control plane under /_casim/ that exposes the ground
// truth of every status change it made, changes instances and injects faults.
//
// # Signatures
//
// Two signatures are verified, on the same listener, for ECS (2014-05-26)
// and SWAS (2020-06-01):
//
//   - RPC signature v1 (HMAC-SHA1; the V1 SDKs): the
//     parameters Action, Version, AccessKeyId, SignatureMethod, Timestamp,
//     SignatureNonce, Signature and SecurityToken (STS).
//   - ACS3-HMAC-SHA256 (the V2 SDKs' default: alibabacloud-go/*,
//     @alicloud/* on npm), as "V3 request structure and signature"
//     documents it
//     (https://www.alibabacloud.com/help/en/sdk/product-overview/v3-request-structure-and-signature)
//     and the V2 Go SDK's signer (darabonba-openapi v2.1.14,
//     utils.GetAuthorization) computes it: the canonical request of
//     method, path, sorted percent-encoded query, the signed headers
//     (lower-case, trimmed, sorted) and the hex SHA-256 of the body the
//     server received; Authorization is "ACS3-HMAC-SHA256
//     Credential=AK,SignedHeaders=a;b,Signature=hex". Action and Version
//     come from x-acs-action and x-acs-version, the STS token from
//     x-acs-security-token. host and every x-acs-* header sent must be
//     signed; x-acs-date must be within 15 minutes, x-acs-signature-nonce
//     unused for 15 minutes.
//
// Their errors: a missing v1 parameter is MissingParameter.NAME; an
// Authorization without Credential, SignedHeaders or Signature, a missing
// x-acs-date, x-acs-signature-nonce or x-acs-content-sha256, or an unsigned
// x-acs-* header is IncompleteSignature; another algorithm (ACS3-HMAC-SM3,
// ACS3-RSA-SHA256) is InvalidSignatureMethod; an unknown key
// InvalidAccessKeyId.NotFound (404); a wrong signature, body, query or
// signed header SignatureDoesNotMatch, whose message gives the server's
// string to sign; a bad or old date InvalidTimeStamp.Format or .Expired; a
// reused nonce SignatureNonceUsed; a missing or other STS token
// InvalidSecurityToken.Malformed or .MismatchWithAccessKey (all 400 but
// the 404).
//
// # Commands
//
// Besides RunCommand, ECS serves the command lifecycle. Parameters,
// defaults and response fields follow Alibaba's API reference of each
// action (https://www.alibabacloud.com/help/en/ecs/developer-reference/api-ecs-2014-05-26-createcommand
// and the pages of invokecommand, describecommands, modifycommand,
// deletecommand and describecloudassistantstatus beside it), whose text
// the V2 Go SDK v7.7.0 request models carry; the error codes follow the
// ECS error table of InvokeCommand:
//
//   - CreateCommand: Name, Type and CommandContent are required;
//     ContentEncoding defaults to Base64 (any value but PlainText means
//     Base64, as documented); Timeout defaults to 60; EnableParameter
//     makes {{name}} placeholders parameters. Returns CommandId.
//     RunCommand with KeepCommand=true saves its command too.
//   - InvokeCommand: CommandId and InstanceId.N (at most 100); Parameters
//     (a JSON object) fills the placeholders; Timeout, WorkingDir,
//     Username, RepeatMode, Frequency (or the legacy Timed=true) and
//     OssOutputDelivery as RunCommand's. Returns InvokeId; the invocation
//     carries the command's id and name and is listed and polled as any
//     other.
//   - DescribeCommands: filters CommandId, Name, Type, Description and
//     Provider (casim has no public commands: a Provider lists none);
//     CommandContent Base64 unless ContentEncoding=PlainText; newest
//     first; pages by PageNumber and PageSize or by MaxResults and
//     NextToken (1..50, default 10). InvokeTimes counts InvokeCommand runs.
//   - ModifyCommand: changes Name, Description, WorkingDir, Timeout and
//     Launcher; CommandContent is documented as no longer used and
//     changes nothing.
//   - DeleteCommand: the command is gone; its invocations stay.
//   - DescribeCloudAssistantStatus: the account's ECS instances in the
//     region (InstanceId.N and OSType filter; PageSize does not apply with
//     InstanceId), CloudAssistantStatus "true" while the instance runs and
//     its agent is Running, Upgrading or Outdated, InvocationCount,
//     ActiveTaskCount and LastInvokedTime from its runs; OSType Linux.
//
// An unknown CommandId is InvalidCmdId.NotFound (404), a missing one
// MissingParameter.CommandId. Saved commands are not part of SaveState.
//
// Where the documents are silent (listing order, ties within a second,
// NextToken drift and expiry, undocumented filter values) a [Behaviour]
// chooses what the emulator does; its zero value is the ideal API. Set it
// with Options.Behaviour, SetBehaviour, POST /_casim/behaviour or casim's
// flags; RandomBehaviour mixes them from a seed.
//
// It serves several Alibaba Cloud accounts on one listener. The key pair of
// Options.AccessKeyID is the default account, named "default", with the
// instance ids the emulator always had; each of Options.Accounts (casim's
// --account name:keyid:secret[:token[:uid]]) is another, with its own fleet
// (instance ids of its own), its own invocations and its own quota windows,
// since Alibaba throttles each account on its own. Each account has an
// Alibaba account id (UID, 16 digits; Options.UID for the default one),
// which its EventBridge events carry; unset, one is derived from its name. A request is served for the account
// its AccessKeyId belongs to, so a client sees only its account's work.
// Truth entries and instances name their account. The Server's methods
// that create work (Invoke, RunWorkload, Seed) work in the default account
// and those that observe (Truth, Instances, Calls, Throttled, CallLog)
// cover every account; Server.Account(name) returns a handle with the same
// methods limited to one account:
//
//	s, _ := castest.New(castest.Options{AccessKeyID: "LTAIdefault", AccessKeySecret: "s0",
//		Accounts: []castest.Account{{Name: "prod", AccessKeyID: "LTAIprod", AccessKeySecret: "s1"}}})
//	prod := s.Account("prod")
//	id, _ := prod.Invoke("cn-hangzhou", []string{prod.Instances()[0].ID}, "echo hi", 60)
//
// # EventBridge
//
// Alibaba pushes ecs:CloudAssistant:TaskCompleted through EventBridge when
// a run ends on an ECS instance. With Options.EventBridge.URL (casim's
// --eventbridge-url and --eventbridge-token), the emulator POSTs that event,
// a CloudEvents 1.0 envelope in structured mode (see [TaskCompleted] for
// its shape and the page it follows), for every ECS run that ends on an
// instance in a status the documents list (Aborted, Success, Failed,
// Invalid, Timeout, Cancelled, Terminated), with its bearer token. It
// pushes on its own goroutine; a [PushDelivery] drops, duplicates, delays
// and reorders the events and retries failed POSTs, and [PushStats] counts
// what happened. Change them at run time with SetEventBridge or
// POST /_casim/eventbridge; GET /_casim/eventbridge shows the counts.
//
// # Scripts
//
// A command's content is a script in a tiny shell-like language; its
// statements are separated by ";" or newlines (even inside quotes):
//
//	echo TEXT                print TEXT and a newline (TEXT stripped of quotes)
//	printf FORMAT            print FORMAT with its escapes, and no newline
//	head -c N /dev/zero      print N NUL bytes
//	head -c N /dev/urandom   print N pseudo-random bytes, the same for the same N
//	yes [TEXT] | head -c N   print "TEXT\n" (default "y\n") over and over, cut at N bytes
//	sleep SECONDS            wait (fractions allowed)
//	exit CODE                stop with CODE
//	hang                     never finish (until the timeout or a stop)
//	crash                    the agent fails to run it (status Error)
//
// An unknown command prints a shell-like error and sets the status to 127;
// the exit code is that of the last statement, as in sh. printf's FORMAT
// loses one level of quotes and knows \\ \a \b \e \f \n \r \t \v, \NNN and
// \0NNN (octal), \xHH (hex) and %%, so a script prints any bytes: NUL,
// invalid UTF-8, ANSI escapes (write \073 for a ";"). head prints at most
// 1 MiB a statement. The output is every byte printed, except that the
// final newline of a last echo (or error message) is dropped: "echo a; echo
// b" outputs "a\nb", while printf controls every byte.
//
// # Output
//
// ECS shows the first 24 KB (24,576 bytes) of a run's output as Output,
// Base64 unless the request says ContentEncoding=PlainText, and the
// number of bytes cut beyond them as Dropped; an unknown ContentEncoding
// is 400 InvalidParameter.ContentEncoding. DescribeInvocations shows
// Output and Dropped only with IncludeOutput=true, which needs InvokeId or
// InstanceId (without either: 400 MissingParameter.InvokeIdOrInstanceId,
// a code the documents do not name). SWAS shows the same 24 KB as plain
// text, with no Dropped. PlainText output is JSON text, so invalid UTF-8
// in it reaches the client as U+FFFD, as from any JSON API; Base64
// carries every byte.
//
// An ECS RunCommand with OssOutputDelivery=oss://BUCKET[/PREFIX] delivers
// each run's output to OSS (the V1 SDK's request lacks the parameter: set
// it in req.QueryParams; in process, pass a Command to Server.RunCommand);
// another form is 400 InvalidParameter.OssOutputDelivery. Both ECS
// listings then show the configuration as OssOutputDelivery and, per run,
// OssOutputStatus: InProgress until Options.OssDeliveryDelay after the
// run ended, then Finished with OssOutputUri
// oss://BUCKET/PREFIX/INVOKEID/INSTANCEID/REPEATS/output.txt, or Failed
// with OssOutputErrorCode and OssOutputErrorInfo; OssOutputUri is "" until
// Finished. Delivery fails with CloudAssistant.UnsupportedInvocationStatus
// for a run that never started, and by the bucket's name: OSS.NoSuchBucket
// for one starting "nosuch", OSS.AccessDenied for "denied",
// OSS.FileImmutable for "immutable"; an object name over 1,023 bytes is
// OSS.InvalidObjectName. Without delivery none of these fields is sent.
//
// The emulator is the ground truth of capoller's tests: its state changes are
// recorded with the instant they happened, whether or not anyone polled.
package castest
