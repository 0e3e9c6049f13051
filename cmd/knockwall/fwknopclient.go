//go:build linux

package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/rules"
)

func newFwknopClientCmd(env environment) *cobra.Command {
	var f configFlags
	var host string
	var qr bool
	cmd := &cobra.Command{
		Use:   "fwknop-client SERVICE",
		Short: "Print the settings a fwknop client (the Android and iOS apps, or ~/.fwknoprc) needs for SERVICE's fwknop section",
		Long: `Print, for a service with a fwknop section, the settings the fwknop apps
for Android and iOS ask for, and the same as a ~/.fwknoprc stanza for the
fwknop command-line client. The output holds the service's keys: show it to
the phone's owner only. --qr adds a QR code of the keys in the form the
Android app scans ("KEY_BASE64:... HMAC_KEY_BASE64:...").

  knockwall config fwknop-client ssh --host server.example.org --qr`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, _, err := f.load(env)
			if err != nil {
				return err
			}
			for i := range set.Services {
				if svc := &set.Services[i]; svc.Name == args[0] {
					if svc.Fwknop == nil {
						return usageError{fmt.Errorf("service %q has no fwknop section: phones send fwknop packets only", svc.Name)}
					}
					return writeFwknopClient(cmd.OutOrStdout(), svc, host, qr)
				}
			}
			return usageError{fmt.Errorf("service %q is not in the config", args[0])}
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&host, "host", "", "this server's name or address as phones reach it (default: a placeholder)")
	cmd.Flags().BoolVar(&qr, "qr", false, "add a QR code of the keys")
	return cmd
}

// writeFwknopClient writes svc's fwknop client settings: what the server
// accepts (knockwall's fwknop package: Rijndael in CBC mode, HMAC-SHA256,
// a SHA-256 digest, access messages for the service's TCP ports, by UDP),
// with the allow-IP bound to the sender's address, in the apps' words and
// as a .fwknoprc stanza.
func writeFwknopClient(w io.Writer, svc *rules.Service, host string, qr bool) error {
	if host == "" {
		host = "<this server's address>"
	}
	enc, mac := svc.Fwknop.Key.Base64()
	access := make([]string, len(svc.Ports))
	for i, p := range svc.Ports {
		access[i] = fmt.Sprintf("tcp/%d", p)
	}
	timeout := int(svc.OpenFor.Seconds())
	allow := `Resolve IP  (the phone's public address; "Source IP" works behind any NAT too, but binds the packet to no address: whoever sees it first can use it)`
	if svc.Fwknop.RequireSource {
		allow = `Resolve IP  (the phone's public address; this server refuses "Source IP", allow-IP 0.0.0.0)`
	}
	fmt.Fprintf(w, `# fwknop client settings for service %[1]s. They hold its keys: show them
# to the phone's owner only.

Server address:     %[2]s
Server port:        %[3]d  (the SPA port)
Protocol:           UDP
Access ports:       %[4]s
Allow IP:           %[8]s
Rijndael key:       %[5]s  (base64)
HMAC key:           %[6]s  (base64)
HMAC type:          SHA256
Digest type:        SHA256
Encryption mode:    CBC  (not legacy)
Message type:       Access  (not NAT, not command)
Server timeout:     %[7]d  (seconds; a shorter one shortens the grant)

# ~/.fwknoprc stanza for the command-line client (fwknop -n %[1]s):
[%[1]s]
SPA_SERVER          %[2]s
SPA_SERVER_PORT     %[3]d
SPA_SERVER_PROTO    udp
ACCESS              %[4]s
ALLOW_IP            resolve
KEY_BASE64          %[5]s
HMAC_KEY_BASE64     %[6]s
USE_HMAC            Y
HMAC_DIGEST_TYPE    sha256
DIGEST_TYPE         sha256
ENCRYPTION_MODE     cbc
FW_TIMEOUT          %[7]d
`, svc.Name, host, svc.Fwknop.Port, strings.Join(access, ","), enc, mac, timeout, allow)
	if !qr {
		return nil
	}
	code, err := qrText(fwknopQRPayload(enc, mac))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\n# The keys as a QR code, for the Android app's \"Scan QR\":\n%s", code)
	return nil
}

// fwknopQRPayload is the text of the keys' QR code: the form the Android
// app (Fwknop2) scans, and OpenWrt's fwknopd page shows.
func fwknopQRPayload(enc, mac string) string {
	return "KEY_BASE64:" + enc + " HMAC_KEY_BASE64:" + mac
}
