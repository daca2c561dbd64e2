package cloudassist

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultChain says where the SDK's default credential chain will look,
// and what it will find there, without calling anything: the chain itself
// resolves only when the first API call signs.
type DefaultChain struct {
	// Sources are those that hold credentials, in the chain's order:
	// "environment", "OIDC", "aliyun CLI profile", "credentials file",
	// "credentials URI".
	Sources []string
	// Metadata is true unless ALIBABA_CLOUD_ECS_METADATA_DISABLED is
	// true: the chain then ends by asking the ECS metadata service for
	// the instance's RAM role, which only an ECS instance answers.
	Metadata bool
	// STS is true when what the chain finds first is a security token
	// (a token in the environment, OIDC, a profile, the instance's role).
	STS bool
}

// ErrNoCredentials is the default chain finding nothing anywhere.
var ErrNoCredentials = errors.New("cloudassist: no Alibaba Cloud credentials found")

// ProbeDefaultChain reads the variables (through getenv) and the files
// the SDK's default chain reads, in its order (see the SDK's
// NewDefaultCredentialsProvider), and reports what is there. home is the
// user's home directory ("" to skip the files under it).
func ProbeDefaultChain(getenv func(string) string, home string) DefaultChain {
	var c DefaultChain
	exists := func(p string) bool { _, err := os.Stat(p); return p != "" && err == nil }
	if getenv("ALIBABA_CLOUD_ACCESS_KEY_ID") != "" && getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET") != "" {
		c.Sources = append(c.Sources, "environment")
		c.STS = getenv("ALIBABA_CLOUD_SECURITY_TOKEN") != ""
	}
	if getenv("ALIBABA_CLOUD_ROLE_ARN") != "" && getenv("ALIBABA_CLOUD_OIDC_PROVIDER_ARN") != "" && getenv("ALIBABA_CLOUD_OIDC_TOKEN_FILE") != "" {
		c.Sources = append(c.Sources, "OIDC")
	}
	if !strings.EqualFold(getenv("ALIBABA_CLOUD_CLI_PROFILE_DISABLED"), "true") && home != "" && exists(filepath.Join(home, ".aliyun", "config.json")) {
		c.Sources = append(c.Sources, "aliyun CLI profile")
	}
	file := getenv("ALIBABA_CLOUD_CREDENTIALS_FILE")
	if file == "" && home != "" {
		file = filepath.Join(home, ".alibabacloud", "credentials")
	}
	if exists(file) {
		c.Sources = append(c.Sources, "credentials file")
	}
	if getenv("ALIBABA_CLOUD_CREDENTIALS_URI") != "" {
		c.Sources = append(c.Sources, "credentials URI")
	}
	c.Metadata = !strings.EqualFold(getenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED"), "true")
	if len(c.Sources) == 0 || c.Sources[0] != "environment" {
		c.STS = true // OIDC, profiles and the RAM role may all hand out tokens
	}
	return c
}

// Missing is ErrNoCredentials, saying where the chain looked, when it
// will find nothing: no source holds credentials and the metadata
// service is off. nil otherwise.
func (c DefaultChain) Missing() error {
	if len(c.Sources) > 0 || c.Metadata {
		return nil
	}
	return fmt.Errorf("%w: looked in ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, OIDC (ALIBABA_CLOUD_ROLE_ARN, "+
		"ALIBABA_CLOUD_OIDC_PROVIDER_ARN, ALIBABA_CLOUD_OIDC_TOKEN_FILE), the aliyun CLI's ~/.aliyun/config.json, the credentials file "+
		"(ALIBABA_CLOUD_CREDENTIALS_FILE, else ~/.alibabacloud/credentials) and ALIBABA_CLOUD_CREDENTIALS_URI; the instance's RAM role "+
		"is off (ALIBABA_CLOUD_ECS_METADATA_DISABLED=true). Set a pair of keys in the environment, or list accounts with their credentials "+
		"in the configuration file", ErrNoCredentials)
}
