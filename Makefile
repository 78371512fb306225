# Herald developer entry points. Code generation is offline: buf comes from npm
# (pinned in tools/buf/package-lock.json), the protoc plugins are Go tools
# pinned in go.mod, and buf/validate/validate.proto is printed from the Go
# module by tools/protovalidate-dump (the Buf Schema Registry is unreachable).

SHELL := /bin/sh
GO    ?= go
NPM   ?= npm
BUF   := tools/buf/node_modules/.bin/buf
# The API document linters (Redocly CLI, the AsyncAPI parser).
APILINT := tools/apilint/node_modules/.bin/redocly
# protoc-gen-es (gen/es) and tsc for web/ts_test.go, pinned in tools/ts.
ES    := tools/ts/node_modules/.bin/protoc-gen-es

# Outputs of `make generate`; all committed.
GENERATED := gen third_party/protovalidate

.PHONY: all generate lint lint-api check-generate test ci tools clean-tools

all: generate lint

# Install buf from the lockfile when node_modules is missing or the lockfile
# changed.
$(BUF): tools/buf/package.json tools/buf/package-lock.json
	$(NPM) ci --prefix tools/buf --no-audit --no-fund
	@touch $@

$(ES): tools/ts/package.json tools/ts/package-lock.json
	$(NPM) ci --prefix tools/ts --no-audit --no-fund
	@touch $@

$(APILINT): tools/apilint/package.json tools/apilint/package-lock.json
	$(NPM) ci --prefix tools/apilint --no-audit --no-fund --ignore-scripts
	@touch $@

tools: $(BUF) $(APILINT) $(ES)

clean-tools:
	rm -rf tools/buf/node_modules tools/apilint/node_modules tools/ts/node_modules

generate: $(BUF) $(ES)
	$(GO) run ./tools/protovalidate-dump -out third_party/protovalidate
	$(BUF) generate

lint: $(BUF)
	$(BUF) lint

# Lint the generated OpenAPI document (Redocly, recommended rules) and
# validate the AsyncAPI document; `make test` runs the same test.
lint-api: $(APILINT)
	$(GO) test -count=1 -run TestAPIDocumentsLint ./gateway/

# Regenerate into the tree and fail if that changed anything, compared with a
# copy of the generated directories taken before (works whether or not the
# files are committed yet; in CI the copy is the committed state).
check-generate: $(BUF) $(ES)
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for d in $(GENERATED); do mkdir -p "$$tmp/$$d"; if [ -d "$$d" ]; then cp -a "$$d/." "$$tmp/$$d/"; fi; done; \
	$(MAKE) --no-print-directory generate; \
	drift=0; \
	for d in $(GENERATED); do diff -r -u "$$tmp/$$d" "$$d" >"$$tmp/diff.txt" 2>&1 || { drift=1; cat "$$tmp/diff.txt"; }; done; \
	if [ $$drift -ne 0 ]; then \
	  echo >&2; \
	  echo >&2 "check-generate: generated code is out of date ($(GENERATED))."; \
	  echo >&2 "Run 'make generate' and commit the result."; \
	  exit 1; \
	fi; \
	if git rev-parse --verify -q HEAD >/dev/null 2>&1 && [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
	  git status --porcelain -- $(GENERATED) >&2; \
	  echo >&2 "check-generate: generated files differ from the last commit (uncommitted or stale). Commit them."; \
	  exit 1; \
	fi; \
	echo "check-generate: generated code is up to date."

# Provided by scripts/test and .ci/run (maintained separately).
test:
	./scripts/test

ci:
	./.ci/run
