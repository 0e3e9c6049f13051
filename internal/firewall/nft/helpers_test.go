package nft

import (
	"context"

	"github.com/knockwall/knockwall/internal/firewall"
)

// grantElems lists the elements of the kernel grant sets.
func (b *Backend) grantElems() ([]firewall.GrantElem, error) {
	return b.ReadGrants(context.Background())
}
