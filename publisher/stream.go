package publisher

import "fmt"

// maxNameLen is the longest stream name JetStream accepts.
const maxNameLen = 255

// ValidStreamName checks a JetStream stream name: 1 to 255 characters of
// [A-Za-z0-9_-]. The server also refuses whitespace, ".", "*", ">" and path
// separators; the narrower set is also safe in file names and subjects.
func ValidStreamName(name string) error {
	if name == "" || len(name) > maxNameLen || EscapeToken(name) != name {
		return fmt.Errorf("publisher: stream name %q: use 1 to %d characters of [A-Za-z0-9_-]", name, maxNameLen)
	}
	return nil
}
