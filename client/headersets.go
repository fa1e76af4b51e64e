package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/bpfarm/bpfarm/api"
)

// ImportHeaderSet uploads a tar.gz of libbpf headers as the header set name
// (admin).
func (c *Client) ImportHeaderSet(ctx context.Context, name string, tgz io.Reader) (*api.HeaderSetImport, error) {
	resp, err := c.Do(ctx, http.MethodPost, "/api/v1/header-sets", url.Values{"name": {name}}, tgz, "application/gzip", nil)
	if err != nil {
		return nil, fmt.Errorf("import header set %s: %w", name, err)
	}
	defer resp.Body.Close()
	var res api.HeaderSetImport
	return &res, decode(resp, &res)
}

// HeaderSets lists the header sets the server compiles with.
func (c *Client) HeaderSets(ctx context.Context) ([]api.HeaderSet, error) {
	var sets []api.HeaderSet
	return sets, c.getJSON(ctx, "/api/v1/header-sets", nil, &sets)
}
