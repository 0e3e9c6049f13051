package nft

import (
	"encoding/binary"
	"net/netip"

	"github.com/knockwall/knockwall/internal/firewall"
)

// grantElems lists the elements of the kernel grant sets.
func (b *Backend) grantElems() ([]firewall.GrantElem, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []firewall.GrantElem
	for _, name := range []string{firewall.SetGrants4, firewall.SetGrants6} {
		s, ok := b.sets[name]
		if !ok {
			continue
		}
		els, err := b.conn.GetSetElements(s)
		if err != nil {
			return nil, err
		}
		for _, e := range els {
			n := 4
			if name == firewall.SetGrants6 {
				n = 16
			}
			if len(e.Key) < n+2 {
				continue
			}
			a, _ := netip.AddrFromSlice(e.Key[:n])
			out = append(out, firewall.GrantElem{Src: a, Port: binary.BigEndian.Uint16(e.Key[n:]), Timeout: e.Expires})
		}
	}
	return out, nil
}
