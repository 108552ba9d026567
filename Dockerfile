# ckptview as a container: a static binary on distroless, running as a non-root user, with
# the bundled examples and uploads kept in the /data volume.
#
#   docker build -t ckptview .
#   docker run --rm -p 8080:8080 -v ckptview-data:/data ckptview

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ckptview ./cmd/web \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
WORKDIR /app
COPY --from=build /out/ckptview /app/ckptview
COPY --from=build /src/testdata/models /app/testdata/models
# The data directory belongs to the nonroot user (uid 65532) so a fresh volume is writable.
COPY --from=build --chown=65532:65532 /out/data /data
ENV CKPTVIEW_ADDR=:8080 \
    CKPTVIEW_DATA=/data \
    CKPTVIEW_EXAMPLES=/app/testdata/models \
    CKPTVIEW_LOG_FORMAT=json
VOLUME /data
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/app/ckptview"]
