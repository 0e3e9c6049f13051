package main

import (
	"fmt"

	"github.com/knockwall/knockwall/rules"
)

// unboundTokens says, for each way svc takes tokens that name no source,
// what an attacker on the path can do with one, and how clients bind
// theirs (also behind NAT).
func unboundTokens(svc rules.Service) []string {
	var out []string
	if a := svc.SPA; a != nil && !a.RequireSource {
		out = append(out, fmt.Sprintf("%s takes SPA tokens bound to no source (spa.require_source: false): "+
			"anyone on the path who sees one (or holds it back) can send it first, from their own address, "+
			"within max_skew (%s), and the grant is theirs. Set spa.require_source: true and bind every token: "+
			"knockwall knock --source auto, or behind NAT --source PUBLIC_ADDR (the address the server sees).",
			svc.Name, a.MaxSkew))
	}
	if f := svc.Fwknop; f != nil && !f.RequireSource {
		out = append(out, fmt.Sprintf("%s takes fwknop packets with allow-IP 0.0.0.0 (fwknop -s; fwknop.require_source: false): "+
			"anyone on the path who sees one (or holds it back) can send it first, from their own address, "+
			"within max_age (%s), and the grant is theirs. Set fwknop.require_source: true and have clients name "+
			"their address: fwknop -a ADDR, or behind NAT fwknop -R (asks a web service for the public address) or -a PUBLIC_ADDR.",
			svc.Name, f.MaxAge))
	}
	return out
}
