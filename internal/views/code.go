package views

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// MemberRow is one member of a checkpoint's zip archive, for the archive listing.
type MemberRow struct {
	Name, Kind, SizeText string
	// Copy says, of a name several members have, which of them this is and whether the
	// loading program reads it ("" for a name of one member).
	Copy string
	// URL shows the member as text (TorchScript code, extra files, records); "" for binary
	// members (storages, pickles: the tree shows those).
	URL string
}

// kindText says in a reader's words what each kind of member is.
var kindText = map[string]string{
	"code":   "TorchScript code (compiled and run by torch.jit.load)",
	"debug":  "TorchScript debug info (a pickle)",
	"pickle": "pickle",
	"data":   "tensor storage",
	"extra":  "extra file (_extra_files)",
	"record": "record",
	"array":  ".npy array",
	"other":  "other",
}

// MemberRows lists an archive's members, code first.
func MemberRows(id string, ms []ckpt.Member) []MemberRow {
	var out []MemberRow
	for _, want := range []string{"code", "extra", "record", "pickle", "debug", "array", "data", "other"} {
		for _, m := range ms {
			if m.Kind != want {
				continue
			}
			r := MemberRow{Name: m.Name, Kind: kindText[m.Kind], SizeText: HumanBytes(m.Size)}
			if m.Copies > 1 {
				r.Copy = fmt.Sprintf("copy %d of %d of this name: read", m.Copy, m.Copies)
				if m.Shadowed {
					r.Copy = fmt.Sprintf("copy %d of %d of this name: not read (the loading program reads another copy)", m.Copy, m.Copies)
				}
			}
			switch m.Kind {
			case "code", "extra", "record", "other":
				r.URL = CodeURL(id, m.Name)
				if m.Copies > 1 {
					r.URL += "&copy=" + strconv.Itoa(m.Copy)
				}
			}
			out = append(out, r)
		}
	}
	return out
}

// CodeURL is the page that shows an archive member as text with line numbers.
func CodeURL(id, member string) string {
	return "/c/" + url.PathEscape(id) + "/code?member=" + url.QueryEscape(member)
}

// CodeLine is one numbered line of a member shown as text.
type CodeLine struct {
	N    int
	Text string
}

// CodePage shows one archive member as read-only text: TorchScript code, which torch.jit.load
// would compile and run, is shown and never interpreted.
type CodePage struct {
	Meta       FileMeta
	Member     string
	Kind       string
	Lines      []CodeLine
	Binary     bool // not UTF-8 text: not shown
	SizeText   string
	BackURL    string
	RawURL     string
	Breadcrumb []Link
	// Shadowed says that the archive holds another member of this name, which is the one
	// the loading program reads, not this one.
	Shadowed bool
}

// NewCodePage numbers the lines of a member's text; copy is which of the members of its
// name it is (0: the one the loading program reads).
func NewCodePage(meta FileMeta, m ckpt.Member, copy int, data []byte) CodePage {
	p := CodePage{Meta: meta, Member: m.Name, Kind: kindText[m.Kind], SizeText: HumanBytes(m.Size),
		BackURL: CheckpointURL(meta.ID), RawURL: CodeURL(meta.ID, m.Name) + "&raw=1", Shadowed: m.Shadowed}
	if copy > 0 {
		p.RawURL += "&copy=" + strconv.Itoa(copy)
	}
	p.Breadcrumb = []Link{{Label: meta.Name, URL: CheckpointURL(meta.ID)}, {Label: m.Name}}
	if !utf8.Valid(data) || strings.IndexByte(string(data), 0) >= 0 {
		p.Binary = true
		return p
	}
	text := strings.TrimSuffix(string(data), "\n")
	for i, l := range strings.Split(text, "\n") {
		p.Lines = append(p.Lines, CodeLine{N: i + 1, Text: strings.TrimSuffix(l, "\r")})
	}
	return p
}
