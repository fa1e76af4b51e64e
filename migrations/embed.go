// Package migrations embeds bpfarm's SQL schema migrations, applied in
// order by goose when the server opens its database.
package migrations

import "embed"

// FS holds the *.sql migrations, named NNNNN_description.sql.
//
//go:embed *.sql
var FS embed.FS
