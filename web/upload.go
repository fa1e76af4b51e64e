package web

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/bpfarm/bpfarm/api"
	"github.com/bpfarm/bpfarm/bpfsrc"
	"github.com/bpfarm/bpfarm/server/build"
)

// maxUpload bounds an upload: a bundle's limit plus form overhead.
var maxUpload = bpfsrc.DefaultLimits.MaxTotalSize + 1<<20

type uploadData struct {
	Name   string
	Arches []string // chosen
	All    []string // known arches
	Flags  string
	Entry  string
	Error  string
	Files  []string
}

func (d uploadData) Chosen(arch string) bool { return slices.Contains(d.Arches, arch) }

func (u *UI) uploadPage(w http.ResponseWriter, r *http.Request) {
	if u.cfg.Intake == nil {
		u.errorPage(w, r, http.StatusNotFound, "This server takes no uploads.")
		return
	}
	d := uploadData{Name: r.URL.Query().Get("name"), Arches: []string{"x86_64"}, All: api.Arches}
	u.render(w, r, http.StatusOK, "upload.html", page{Title: "Upload", Active: "upload", Data: d})
}

// upload reads the upload form (program name, arches, flags, entry and the
// files: a .bpf.c with its headers, or one .tar.gz), pushes it like
// POST /api/v1/programs/NAME/revisions and shows the build.
func (u *UI) upload(w http.ResponseWriter, r *http.Request) {
	if u.cfg.Intake == nil {
		u.errorPage(w, r, http.StatusNotFound, "This server takes no uploads.")
		return
	}
	mr, ok := u.readMultipart(w, r, maxUpload)
	if !ok {
		return
	}
	d := uploadData{All: api.Arches}
	lim := bpfsrc.DefaultLimits
	var (
		files []bpfsrc.File
		total int64
	)
	again := func(code int, msg string) {
		d.Error = msg
		if len(d.Arches) == 0 {
			d.Arches = []string{"x86_64"}
		}
		u.render(w, r, code, "upload.html", page{Title: "Upload", Active: "upload", Data: d})
	}
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			again(http.StatusRequestEntityTooLarge, fmt.Sprintf("The upload exceeds %d bytes.", maxUpload))
			return
		}
		if err != nil {
			again(http.StatusBadRequest, "Unreadable form: "+err.Error())
			return
		}
		field := p.FormName()
		if field == "files" {
			name := p.FileName()
			data, err := io.ReadAll(io.LimitReader(p, lim.MaxFileSize+1))
			if errors.As(err, &mbe) {
				again(http.StatusRequestEntityTooLarge, fmt.Sprintf("The upload exceeds %d bytes.", maxUpload))
				return
			}
			if err != nil {
				again(http.StatusBadRequest, "Upload interrupted: "+err.Error())
				return
			}
			if name == "" && len(data) == 0 {
				continue // an empty file input
			}
			if int64(len(data)) > lim.MaxFileSize {
				again(http.StatusBadRequest, fmt.Sprintf("%s exceeds %d bytes.", name, lim.MaxFileSize))
				return
			}
			if total += int64(len(data)); total > lim.MaxTotalSize {
				again(http.StatusBadRequest, fmt.Sprintf("The files exceed %d bytes together.", lim.MaxTotalSize))
				return
			}
			if len(files) >= lim.MaxFiles {
				again(http.StatusBadRequest, fmt.Sprintf("More than %d files.", lim.MaxFiles))
				return
			}
			files = append(files, bpfsrc.File{Name: name, Data: data})
			d.Files = append(d.Files, name)
			continue
		}
		v, _ := io.ReadAll(io.LimitReader(p, 64<<10))
		s := string(v)
		switch field {
		case "name":
			d.Name = strings.TrimSpace(s)
		case "arch":
			d.Arches = append(d.Arches, strings.TrimSpace(s))
		case "flags":
			d.Flags = s
		case "entry":
			d.Entry = strings.TrimSpace(s)
		default:
			again(http.StatusBadRequest, fmt.Sprintf("Unknown form field %q.", field))
			return
		}
	}
	if len(files) == 0 {
		again(http.StatusBadRequest, "Choose the program's files: a .bpf.c file and the headers it includes, or a .tar.gz of them.")
		return
	}
	if d.Name == "" {
		// Default the program name from the entry file.
		for _, f := range files {
			if strings.HasSuffix(f.Name, ".bpf.c") {
				d.Name = strings.TrimSuffix(f.Name, ".bpf.c")
				break
			}
		}
	}
	if err := build.ValidProgramName(d.Name); err != nil {
		again(http.StatusBadRequest, capitalize(err.Error())+".")
		return
	}
	var (
		bundle *bpfsrc.Bundle
		err    error
	)
	if len(files) == 1 && (strings.HasSuffix(files[0].Name, ".tar.gz") || strings.HasSuffix(files[0].Name, ".tgz")) {
		bundle, err = bpfsrc.ReadTarGz(bytes.NewReader(files[0].Data), d.Entry, lim)
	} else {
		bundle, err = bpfsrc.New(d.Entry, files, lim)
	}
	if err != nil {
		again(http.StatusBadRequest, capitalize(oneLine(err.Error()))+".")
		return
	}
	var flags []string
	for _, f := range strings.Split(d.Flags, "\n") {
		if f = strings.TrimSpace(f); f != "" {
			flags = append(flags, f)
		}
	}
	res, err := u.cfg.Intake.Push(r.Context(), build.PushRequest{Program: d.Name, Bundle: bundle, Arches: d.Arches,
		Flags: flags, PushedBy: viewerOf(r).Name})
	if err != nil {
		var in *build.InputError
		if errors.As(err, &in) {
			again(http.StatusBadRequest, capitalize(oneLine(err.Error()))+".")
			return
		}
		u.fail(w, r, err)
		return
	}
	u.log.Info("ui: pushed", "program", res.Program, "revision", short(res.Revision), "created", res.Created,
		"by", viewerOf(r).Name)
	if len(res.Builds) == 0 {
		http.Redirect(w, r, "/programs/"+pathEscape(res.Program), http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/builds/%d", res.Builds[0].ID), http.StatusSeeOther)
}
