// Package s3store keeps uploads in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW,
// versitygw, R2...) and reads them in place with ranged GETs.
//
// Layout under the configured prefix:
//
//	blobs/<sha256>          the uploaded bytes; metadata: name, uploaded, format
//	aux/<sha256>/<name>     documents that belong to a blob (computed statistics)
//	refs/<id>               what an in-place id names (a URL and the version opened)
//	tmp/<random>            uploads being written, copied to blobs/ once their hash is known
//
// An upload streams to the bucket while it is hashed: a file of one part is put straight
// under its hash; a larger one is a multipart upload under tmp/, which is invisible until
// it completes, then copied under its hash and deleted. A replica killed mid-upload leaves
// an unfinished multipart upload or a tmp/ object, never a blob, and New removes what is
// older than a day.
//
// Endpoint, region and credentials come from the AWS SDK's standard sources
// (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, the shared config files, instance roles).
package s3store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/ckptview/ckptview/internal/store"
)

// Config says which bucket to use and how.
type Config struct {
	// URL is s3://bucket or s3://bucket/prefix.
	URL string
	// PathStyle forces path-style requests (http://host/bucket/key). They are used anyway
	// when the endpoint is an IP address or localhost.
	PathStyle bool
	// Endpoint overrides the endpoint the SDK would take from the environment (tests).
	Endpoint string
	// Timeout bounds one request to the bucket, retries included (0: 30 s); past it the
	// read fails as unavailable instead of hanging.
	Timeout time.Duration
	// CacheBytes bounds the memory of the block cache shared by every open blob (0: 64 MiB).
	CacheBytes int64
	// Scratch is the local directory for temporary files (decompressed streams, exports).
	Scratch string
	// PartSize is the size of an upload's parts (0: 16 MiB; at least 5 MiB, S3's minimum).
	PartSize int64
	// CopyPartSize is the size of the parts of a server-side copy of an object larger than
	// 5 GiB (0: 512 MiB); tests make it small.
	CopyPartSize int64
	// MaxSingleCopy is the largest object copied with one CopyObject (0: 5 GiB, S3's limit).
	MaxSingleCopy int64
}

// Store is a bucket of blobs. It implements store.Blobs.
type Store struct {
	client  *s3.Client
	bucket  string
	prefix  string // "" or ending in "/"
	timeout time.Duration
	cache   *blockCache
	scratch *store.Store
	part    int64
	copyPart,
	maxSingleCopy int64
	now func() time.Time
}

var _ store.Blobs = (*Store)(nil)

// ParseURL splits s3://bucket/prefix into its bucket and its prefix ("" or ending in /).
func ParseURL(raw string) (bucket, prefix string, err error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "s3" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("store %q: want s3://bucket or s3://bucket/prefix", raw)
	}
	prefix = strings.Trim(u.Path, "/")
	if prefix != "" {
		prefix += "/"
	}
	return u.Host, prefix, nil
}

// New connects to the bucket, checks that it can be reached, and removes what crashed
// uploads left behind.
func New(ctx context.Context, c Config) (*Store, error) {
	bucket, prefix, err := ParseURL(c.URL)
	if err != nil {
		return nil, err
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.CacheBytes <= 0 {
		c.CacheBytes = 64 << 20
	}
	if c.PartSize <= 0 {
		c.PartSize = 16 << 20
	}
	c.PartSize = max(c.PartSize, 5<<20)
	if c.CopyPartSize <= 0 {
		c.CopyPartSize = 512 << 20
	}
	if c.MaxSingleCopy <= 0 {
		c.MaxSingleCopy = 5 << 30
	}
	client, err := newClient(ctx, c.Endpoint, c.PathStyle, c.Timeout)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", c.URL, err)
	}
	scratchDir := c.Scratch
	if scratchDir == "" {
		scratchDir = os.TempDir() + "/ckptview-s3"
	}
	scratch, err := store.New(scratchDir)
	if err != nil {
		return nil, err
	}
	s := &Store{client: client, bucket: bucket, prefix: prefix, timeout: c.Timeout,
		cache: newBlockCache(c.CacheBytes), scratch: scratch, part: c.PartSize,
		copyPart: max(c.CopyPartSize, 5<<20), maxSingleCopy: c.MaxSingleCopy, now: time.Now}
	rctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	if _, err := client.HeadBucket(rctx, &s3.HeadBucketInput{Bucket: &bucket}); err != nil {
		scratch.Close()
		return nil, fmt.Errorf("store %s: cannot reach the bucket: %w", c.URL, err)
	}
	s.removeStale(ctx)
	return s, nil
}

// newClient makes an S3 client from the SDK's standard configuration; endpoint, if set,
// overrides the one configured.
func newClient(ctx context.Context, endpoint string, pathStyle bool, timeout time.Duration) (*s3.Client, error) {
	httpClient := awshttp.NewBuildableClient().WithDialerOptions(func(d *net.Dialer) {
		d.Timeout = min(timeout, 10*time.Second)
	}).WithTransportOptions(func(t *http.Transport) {
		t.ResponseHeaderTimeout = timeout
		t.MaxIdleConnsPerHost = 64
	})
	cfg, err := config.LoadDefaultConfig(ctx, config.WithHTTPClient(httpClient),
		config.WithRetryMaxAttempts(4))
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1" // what S3-compatible servers expect when none is set
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		o.UsePathStyle = pathStyle || (o.BaseEndpoint != nil && localEndpoint(*o.BaseEndpoint))
		// Checksums only where the service demands them: S3-compatible servers differ
		// in what they accept, and the content hash already checks every upload.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}), nil
}

// localEndpoint reports whether an endpoint URL names an IP address or localhost, where
// virtual-hosted bucket names cannot resolve.
func localEndpoint(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	h := u.Hostname()
	return h == "localhost" || strings.HasSuffix(h, ".localhost") || net.ParseIP(h) != nil
}

// Where is the bucket's URL.
func (s *Store) Where() string { return "s3://" + s.bucket + "/" + s.prefix }

// Close releases the local scratch directory.
func (s *Store) Close() error { return s.scratch.Close() }

// CreateTemp creates a local scratch file.
func (s *Store) CreateTemp(pattern string) (*os.File, error) { return s.scratch.CreateTemp(pattern) }

func (s *Store) blobKey(id string) string      { return s.prefix + "blobs/" + id }
func (s *Store) refKey(id string) string       { return s.prefix + "refs/" + id }
func (s *Store) auxKey(id, name string) string { return s.prefix + "aux/" + id + "/" + name }

// ctx bounds one request to the bucket.
func (s *Store) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, s.timeout)
}

// unavailable wraps an error of the bucket that is not about the request: the network,
// a timeout, a server error.
func unavailable(err error) error {
	var ue *store.UnavailableError
	if errors.As(err, &ue) {
		return err
	}
	return &store.UnavailableError{Err: err}
}

// notFound reports whether the bucket said that the key does not exist.
func notFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound
}

// Metadata keys (x-amz-meta-*). The name is percent-encoded: header values are ASCII.
const (
	metaName     = "name"
	metaUploaded = "uploaded"
	metaFormat   = "format"
)

func (s *Store) metadata(name string, head []byte) map[string]string {
	return map[string]string{
		metaName:     url.PathEscape(store.CleanName(name)),
		metaUploaded: s.now().UTC().Format(time.RFC3339Nano),
		metaFormat:   store.Sniff(head),
	}
}

func metaOf(id string, size int64, md map[string]string) store.Meta {
	m := store.Meta{ID: id, Size: size}
	if n, err := url.PathUnescape(md[metaName]); err == nil && n != "" {
		m.Name = n
	} else {
		m.Name = id[:12]
	}
	if t, err := time.Parse(time.RFC3339Nano, md[metaUploaded]); err == nil {
		m.Uploaded = t
	}
	m.Format = md[metaFormat]
	return m
}

// head returns a blob's metadata, store.ErrNotFound if there is none.
func (s *Store) head(ctx context.Context, id string) (store.Meta, string, error) {
	rctx, cancel := s.ctx(ctx)
	defer cancel()
	out, err := s.client.HeadObject(rctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(s.blobKey(id))})
	if notFound(err) {
		return store.Meta{}, "", store.ErrNotFound
	}
	if err != nil {
		return store.Meta{}, "", unavailable(err)
	}
	return metaOf(id, aws.ToInt64(out.ContentLength), out.Metadata), aws.ToString(out.ETag), nil
}

// Open returns the blob with that id. Its reads are ranged GETs through the block cache,
// each pinned to the ETag seen here, so they never mix two versions of an object.
func (s *Store) Open(id string) (*store.Blob, store.Meta, error) {
	if !store.ValidID(id) {
		return nil, store.Meta{}, store.ErrInvalidID
	}
	meta, etag, err := s.head(context.Background(), id)
	if err != nil {
		return nil, store.Meta{}, err
	}
	s.readNames(context.Background(), &meta)
	key := s.blobKey(id)
	r := newReader(s.cache, s.timeout, "s3://"+s.bucket+"/"+key+"@"+etag, meta.Size, s3Fetch(s.client, s.bucket, key, etag))
	return r.blob(), meta, nil
}

// Put streams r to the bucket under the sha256 of its bytes.
func (s *Store) Put(ctx context.Context, name string, r io.Reader, max int64) (store.Meta, error) {
	src := r
	if max > 0 {
		src = io.LimitReader(r, max+1)
	}
	src = store.ContextReader(ctx, src)
	h := sha256.New()
	first := make([]byte, s.part)
	n, err := io.ReadFull(io.TeeReader(src, h), first)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return store.Meta{}, fmt.Errorf("store: read %s: %w", store.CleanName(name), err)
	}
	first = first[:n]
	if max > 0 && int64(n) > max {
		return store.Meta{}, store.ErrTooLarge
	}
	md := s.metadata(name, first)
	if int64(n) < s.part { // one part: its hash is known before it is sent
		id := hex.EncodeToString(h.Sum(nil))
		if old, _, err := s.head(ctx, id); err == nil {
			return s.again(ctx, old, store.CleanName(name)), nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return store.Meta{}, err
		}
		if err := s.putObject(ctx, s.blobKey(id), first, md); err != nil {
			return store.Meta{}, err
		}
		m := metaOf(id, int64(n), md)
		m.As = m.Name
		return m, nil
	}
	return s.putMultipart(ctx, first, src, h, max, md)
}

// namesDoc is the aux document of a blob's upload names beyond the first (object metadata
// cannot grow without copying the object).
const namesDoc = "names"

// again records that bytes already stored were uploaded under name, best effort.
func (s *Store) again(ctx context.Context, old store.Meta, name string) store.Meta {
	s.readNames(ctx, &old)
	if old.AddName(name) {
		if b, err := json.Marshal(old.Names); err == nil {
			s.PutAux(ctx, old.ID, namesDoc, b)
		}
	}
	old.As = name
	return old
}

// readNames fills m.Names from the names document, if there is one.
func (s *Store) readNames(ctx context.Context, m *store.Meta) {
	if b, err := s.GetAux(ctx, m.ID, namesDoc); err == nil {
		var names []string
		if json.Unmarshal(b, &names) == nil && len(names) > 0 {
			m.Names = names
		}
	}
}

func (s *Store) putObject(ctx context.Context, key string, b []byte, md map[string]string) error {
	rctx, cancel := s.ctx(ctx)
	defer cancel()
	_, err := s.client.PutObject(rctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &key,
		Body: bytes.NewReader(b), ContentLength: aws.Int64(int64(len(b))), Metadata: md})
	if err != nil {
		return unavailable(err)
	}
	return nil
}

// putMultipart uploads parts under tmp/ while hashing, then copies the object under its
// hash. One part is sent while the next is read.
func (s *Store) putMultipart(ctx context.Context, first []byte, src io.Reader, h interface {
	io.Writer
	Sum([]byte) []byte
}, max int64, md map[string]string) (meta store.Meta, err error) {
	tmpKey := s.prefix + "tmp/" + randomHex()
	rctx, cancel := s.ctx(ctx)
	up, err := s.client.CreateMultipartUpload(rctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &tmpKey})
	cancel()
	if err != nil {
		return store.Meta{}, unavailable(err)
	}
	completed := false
	defer func() {
		if !completed {
			actx, cancel := s.ctx(context.Background())
			s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &tmpKey, UploadId: up.UploadId})
			cancel()
		}
	}()
	type sent struct {
		part types.CompletedPart
		err  error
	}
	var parts []types.CompletedPart
	var inflight chan sent
	wait := func() error {
		if inflight == nil {
			return nil
		}
		r := <-inflight
		inflight = nil
		if r.err != nil {
			return r.err
		}
		parts = append(parts, r.part)
		return nil
	}
	size := int64(0)
	buf, spare := first, make([]byte, s.part)
	for num := int32(1); len(buf) > 0; num++ {
		size += int64(len(buf))
		if max > 0 && size > max {
			return store.Meta{}, store.ErrTooLarge
		}
		if err := wait(); err != nil {
			return store.Meta{}, err
		}
		inflight = make(chan sent, 1)
		go func(num int32, b []byte) {
			pctx, cancel := s.ctx(ctx)
			defer cancel()
			out, err := s.client.UploadPart(pctx, &s3.UploadPartInput{Bucket: &s.bucket, Key: &tmpKey,
				UploadId: up.UploadId, PartNumber: aws.Int32(num), Body: bytes.NewReader(b),
				ContentLength: aws.Int64(int64(len(b)))})
			if err != nil {
				inflight <- sent{err: unavailable(err)}
				return
			}
			inflight <- sent{part: types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)}}
		}(num, buf)
		n, err := io.ReadFull(io.TeeReader(src, h), spare)
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			wait()
			return store.Meta{}, fmt.Errorf("store: read upload: %w", err)
		}
		buf, spare = spare[:n], buf[:cap(buf)]
		if len(buf) == 0 {
			break
		}
	}
	if err := wait(); err != nil {
		return store.Meta{}, err
	}
	rctx, cancel = s.ctx(ctx)
	_, err = s.client.CompleteMultipartUpload(rctx, &s3.CompleteMultipartUploadInput{Bucket: &s.bucket,
		Key: &tmpKey, UploadId: up.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	cancel()
	if err != nil {
		return store.Meta{}, unavailable(err)
	}
	completed = true
	defer func() {
		dctx, cancel := s.ctx(context.Background())
		s.client.DeleteObject(dctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &tmpKey})
		cancel()
	}()
	id := hex.EncodeToString(h.Sum(nil))
	if old, _, err := s.head(ctx, id); err == nil {
		return s.again(ctx, old, metaOf(id, size, md).Name), nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Meta{}, err
	}
	if err := s.copyObject(ctx, tmpKey, s.blobKey(id), size, md); err != nil {
		return store.Meta{}, err
	}
	m := metaOf(id, size, md)
	m.As = m.Name
	return m, nil
}

// copyObject copies src to dst inside the bucket with new metadata: with one CopyObject up
// to 5 GiB, as a multipart copy beyond.
func (s *Store) copyObject(ctx context.Context, src, dst string, size int64, md map[string]string) error {
	source := s.bucket + "/" + url.PathEscape(src)
	source = strings.ReplaceAll(source, "%2F", "/")
	if size <= s.maxSingleCopy {
		rctx, cancel := s.ctx(ctx)
		defer cancel()
		_, err := s.client.CopyObject(rctx, &s3.CopyObjectInput{Bucket: &s.bucket, Key: &dst,
			CopySource: &source, Metadata: md, MetadataDirective: types.MetadataDirectiveReplace})
		if err != nil {
			return unavailable(err)
		}
		return nil
	}
	rctx, cancel := s.ctx(ctx)
	up, err := s.client.CreateMultipartUpload(rctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &dst, Metadata: md})
	cancel()
	if err != nil {
		return unavailable(err)
	}
	done := false
	defer func() {
		if !done {
			actx, cancel := s.ctx(context.Background())
			s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &dst, UploadId: up.UploadId})
			cancel()
		}
	}()
	var parts []types.CompletedPart
	for off, num := int64(0), int32(1); off < size; off, num = off+s.copyPart, num+1 {
		end := min(off+s.copyPart, size) - 1
		pctx, cancel := s.ctx(ctx)
		out, err := s.client.UploadPartCopy(pctx, &s3.UploadPartCopyInput{Bucket: &s.bucket, Key: &dst,
			UploadId: up.UploadId, PartNumber: aws.Int32(num), CopySource: &source,
			CopySourceRange: aws.String(fmt.Sprintf("bytes=%d-%d", off, end))})
		cancel()
		if err != nil {
			return unavailable(err)
		}
		parts = append(parts, types.CompletedPart{ETag: out.CopyPartResult.ETag, PartNumber: aws.Int32(num)})
	}
	rctx, cancel = s.ctx(ctx)
	defer cancel()
	_, err = s.client.CompleteMultipartUpload(rctx, &s3.CompleteMultipartUploadInput{Bucket: &s.bucket,
		Key: &dst, UploadId: up.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	if err != nil {
		return unavailable(err)
	}
	done = true
	return nil
}

// PutAux stores a document of blob id under aux/.
func (s *Store) PutAux(ctx context.Context, id, name string, data []byte) error {
	if !store.ValidID(id) {
		return store.ErrInvalidID
	}
	if !store.ValidAuxName(name) {
		return fmt.Errorf("store: invalid document name %q", name)
	}
	return s.putObject(ctx, s.auxKey(id, name), data, nil)
}

// GetAux reads a document PutAux wrote.
func (s *Store) GetAux(ctx context.Context, id, name string) ([]byte, error) {
	if !store.ValidID(id) {
		return nil, store.ErrInvalidID
	}
	if !store.ValidAuxName(name) {
		return nil, fmt.Errorf("store: invalid document name %q", name)
	}
	return s.getSmall(ctx, s.auxKey(id, name))
}

// getSmall reads a small object whole.
func (s *Store) getSmall(ctx context.Context, key string) ([]byte, error) {
	rctx, cancel := s.ctx(ctx)
	defer cancel()
	out, err := s.client.GetObject(rctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
	if notFound(err) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, unavailable(err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, unavailable(err)
	}
	return b, nil
}

// PutRef records what an in-place id names (see store.Blobs).
func (s *Store) PutRef(ctx context.Context, id string, data []byte) error {
	if !store.ValidID(id) {
		return store.ErrInvalidID
	}
	return s.putObject(ctx, s.refKey(id), data, nil)
}

// GetRef reads a record PutRef wrote, store.ErrNotFound if there is none.
func (s *Store) GetRef(ctx context.Context, id string) ([]byte, error) {
	if !store.ValidID(id) {
		return nil, store.ErrInvalidID
	}
	return s.getSmall(ctx, s.refKey(id))
}

// staleAge is how old a tmp/ object or an unfinished multipart upload must be before New
// removes it: no upload still writing to it is plausible.
const staleAge = 24 * time.Hour

// removeStale deletes old tmp/ objects and aborts old unfinished uploads, best effort.
func (s *Store) removeStale(ctx context.Context) {
	rctx, cancel := s.ctx(ctx)
	defer cancel()
	tmp := s.prefix + "tmp/"
	cutoff := s.now().Add(-staleAge)
	if l, err := s.client.ListObjectsV2(rctx, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &tmp}); err == nil {
		for _, o := range l.Contents {
			if o.LastModified != nil && o.LastModified.Before(cutoff) {
				s.client.DeleteObject(rctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: o.Key})
			}
		}
	}
	if l, err := s.client.ListMultipartUploads(rctx, &s3.ListMultipartUploadsInput{Bucket: &s.bucket, Prefix: &tmp}); err == nil {
		for _, u := range l.Uploads {
			if u.Initiated != nil && u.Initiated.Before(cutoff) {
				s.client.AbortMultipartUpload(rctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: u.Key, UploadId: u.UploadId})
			}
		}
	}
}

func randomHex() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
