// Package castest is an emulator of the Alibaba Cloud Cloud Assistant APIs,
// in the spirit of net/http/httptest: tests, the demo and the casim binary run
// it in process and talk to it over HTTP with the real SDK.
//
// It owns the wire protocol (RPC style, parameters in the query string,
// HMAC-SHA1 signature v1 verified on every request, nonce replay and
// timestamp skew rejected, Alibaba's JSON error shape and HTTP statuses), a
// simulated fleet of instances that run a tiny script language (below), and a
// control plane under /_casim/ that exposes the ground
// truth of every status change it made, changes instances and injects faults.
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
