# A model bundle image for the Helm chart (bundle.source=image): the directory
# written by `enrich models bundle --out bundle/`, at /bundle, plus a shell and
# tar for the chart's init containers.
# Build:  enrich models bundle --out bundle && docker build -f docker/bundle.Dockerfile -t REGISTRY/model-bundle:V .
FROM busybox:1.36
COPY bundle/ /bundle/
