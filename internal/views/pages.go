package views

import (
	"time"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// Example is a bundled checkpoint the home page offers one click away.
type Example struct {
	ID, Name, Description string
	Size                  int64
}

// URL is the example's checkpoint page.
func (e Example) URL() string { return CheckpointURL(e.ID) }

// SizeText is the example's size for a reader.
func (e Example) SizeText() string { return HumanBytes(e.Size) }

// Home is the upload page.
type Home struct {
	Examples []Example
	// MaxUpload is the largest file the server accepts, in bytes (0: no limit shown).
	MaxUpload int64
	// Error says why the last upload failed (the no-JavaScript form posts back here).
	Error string
	// TokenRequired is set when the server takes uploads only with its upload token: the
	// form then asks for it.
	TokenRequired bool
	// Folders are the local directories the server serves in place (-dir).
	Folders []Folder
	// OpenURLs are the URL prefixes the server opens in place; the page offers a form for
	// them when there are any.
	OpenURLs []string
}

// MaxUploadText is the upload limit for a reader, "" when there is none.
func (h Home) MaxUploadText() string {
	if h.MaxUpload <= 0 {
		return ""
	}
	return HumanBytes(h.MaxUpload)
}

// ErrorPage tells a reader what went wrong, and for a file that could not be opened, what
// it would have run.
type ErrorPage struct {
	Status         int
	Title, Message string
	Findings       []ckpt.Finding
	// CheckpointURL links back to the checkpoint a missing node was looked for in.
	CheckpointURL string
}

// FindingRows puts the page's findings in a reviewer's words (no links: the file has no
// pages).
func (e ErrorPage) FindingRows() []FindingRow { return FindingRows("", e.Findings) }

// Folder is a local directory served in place, as the home page lists it.
type Folder struct {
	Title, Dir string
	Files      []FolderFile
	// Truncated says the folder holds more files than a scan lists.
	Truncated bool
}

// FolderFile is one checkpoint of a folder.
type FolderFile struct {
	ID, Name, Format string
	Size             int64
	Modified         time.Time
	// Shards is how many shard files a shard index brings with it.
	Shards int
}

// URL is the file's checkpoint page.
func (f FolderFile) URL() string { return CheckpointURL(f.ID) }

// SizeText is the file's size for a reader.
func (f FolderFile) SizeText() string { return HumanBytes(f.Size) }

// ModifiedText is when the file last changed, to the minute, in UTC.
func (f FolderFile) ModifiedText() string { return f.Modified.UTC().Format("2006-01-02 15:04") }
