// Package web embeds the browser assets: the stylesheet, the small scripts and the vendored
// htmx, served at /static/.
package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"path"
	"sync"
)

// Static holds web/static. The server serves it at /static/ with
// echo.MustSubFS(web.Static, "static"). Pages link to it through Asset, whose URLs change
// whenever a file's content does, so responses may be cached as immutable.
//
//go:embed static
var Static embed.FS

// assetHashes maps each file under static/ to the first hex digits of its sha256.
var assetHashes = sync.OnceValue(func() map[string]string {
	m := map[string]string{}
	_ = fs.WalkDir(Static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := Static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		m[p[len("static/"):]] = hex.EncodeToString(sum[:6])
		return nil
	})
	return m
})

// Asset returns the URL of a file in static/ with its content hash as a version,
// "/static/app.css?v=3f2a…", so a changed file gets a new URL and browsers may cache each
// URL forever.
func Asset(name string) string {
	u := path.Join("/static", name)
	if h, ok := assetHashes()[name]; ok {
		return u + "?v=" + h
	}
	return u
}
