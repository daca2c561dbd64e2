// Package sensitive handles the settings that hold a secret, name a file
// holding one, or could show one in an error: a secret given inline or in
// a file, the CA, certificate and key files of TLS, URLs and errors made
// fit to show, and the check that a setting is printable. The connections
// of publisher (NATS) and checkpoint (Redis), the credentials of
// poller/cloudassist and the configuration of cmd/capoller share it, so
// that none of them imports another for it. It imports nothing of the
// module: it lives under poller/ only because the top level is fixed.
//
// Nothing here puts a secret into an error or a returned text: errors name
// the setting and the file, never a value read from it.
package sensitive
