#!/usr/bin/env bash
# Publishes edgewatt's three images (README "Releasing images"): builds the multi-arch archives
# (linux/amd64 + linux/arm64, `make images`), runs the image tests on exactly those archives
# (`make images-check`), pushes each image index with every platform's image, checks that the
# destination serves the digest that was tested, signs it, records the digests and writes them
# into the chart's values (`<component>.image.digest`).
#
#   hack/release.sh                                  # a release: RELEASE_REGISTRY, cosign
#   hack/release.sh --oci-dir target/release/oci --no-sign        # rehearsal, offline: OCI layouts
#   hack/release.sh --registry 127.0.0.1:5000 --insecure --no-sign # rehearsal: a local registry
#
# Environment:
#   RELEASE_REGISTRY           registry host[:port] to push to (default ghcr.io, the chart's)
#   RELEASE_REPOSITORY_PREFIX  repository prefix (default edgewatt/edgewatt-): images are
#                              <registry>/<prefix><component>:<Chart appVersion>
#   RELEASE_USERNAME, RELEASE_PASSWORD
#                              registry credentials (a temporary auth file, not the command
#                              line); unset: skopeo's own (`skopeo login`, REGISTRY_AUTH_FILE)
#   COSIGN_KEY                 `cosign sign --key` value (file, env://VAR, kms://…); unset:
#                              keyless signing (cosign's OIDC flow). cosign uses `docker login`.
#   RELEASE_PLATFORMS          platforms each index must hold (default "linux/amd64 linux/arm64";
#                              the image tests narrow it to rehearse with `make test`'s archives)
# Options:
#   --registry HOST[:PORT]     instead of RELEASE_REGISTRY
#   --insecure                 plain HTTP or unverified TLS (a local registry)
#   --oci-dir DIR              push into OCI image layouts DIR/edgewatt-<component> (skopeo
#                              `oci:`) instead of a registry; nothing leaves this machine
#   --skip-build               use the archives already in target/images
#   --skip-tests               do not run the image tests (they already ran on these archives)
#   --no-sign                  do not sign (needed when cosign is missing, and with --oci-dir)
#   --chart-dir DIR            chart whose values.yaml gets the digests (default: a copy of
#                              charts/edgewatt in the output directory, so the working tree
#                              stays unpinned for `make images` builds)
#   --out DIR                  where digests, values and the pinned chart go
#                              (default target/release/<appVersion>)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "release: $*" >&2; exit 1; }
say() { echo "release: $*"; }

registry=${RELEASE_REGISTRY:-ghcr.io}
prefix=${RELEASE_REPOSITORY_PREFIX:-edgewatt/edgewatt-}
insecure=false oci_dir="" build=true tests=true sign=true chart_dir="" out=""
while [ $# -gt 0 ]; do
  case $1 in
    --registry) registry=${2:?--registry needs a value}; shift ;;
    --insecure) insecure=true ;;
    --oci-dir) oci_dir=${2:?--oci-dir needs a directory}; shift ;;
    --skip-build) build=false ;;
    --skip-tests) tests=false ;;
    --no-sign) sign=false ;;
    --chart-dir) chart_dir=${2:?--chart-dir needs a directory}; shift ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

components=(exporter controller scheduler)
read -r -a platforms <<<"${RELEASE_PLATFORMS:-linux/amd64 linux/arm64}"
version=$(sed -n 's/^appVersion: *"\{0,1\}\([^" ]*\)"\{0,1\} *$/\1/p' charts/edgewatt/Chart.yaml)
[ -n "$version" ] || die "no appVersion in charts/edgewatt/Chart.yaml"
out=${out:-target/release/$version}
command -v skopeo >/dev/null || die "skopeo missing (make deps installs it as root: apt-get install skopeo)"
command -v python3 >/dev/null || die "python3 missing"
if $sign; then
  [ -z "$oci_dir" ] || die "--oci-dir cannot be signed (cosign signs in a registry): add --no-sign"
  command -v cosign >/dev/null || die "cosign missing: install it (https://docs.sigstore.dev) or pass --no-sign (the digests are still recorded)"
fi
if [ -z "$oci_dir" ] && ! git diff --quiet HEAD 2>/dev/null; then
  echo "release: WARNING: the working tree has uncommitted changes; the images' revision label is HEAD's" >&2
fi

archs="${platforms[*]//linux\//}"
if $build; then
  say "building ${platforms[*]} (make images)"
  make images IMAGE_ARCHS="$archs"
fi
if $tests; then
  say "testing the archives (make images-check)"
  make images-check IMAGE_ARCHS="$archs"
fi

# The image index an archive holds: digest of the outer index.json entry (what a registry serves
# the tag under) and `platform digest` of each image in it; fails unless both platforms are there.
index_of() {
  python3 - "$1" "${platforms[@]}" <<'EOF'
import hashlib, json, sys, tarfile
archive, want = sys.argv[1], sys.argv[2:]
with tarfile.open(archive) as t:
    def blob(d):
        data = t.extractfile("blobs/" + d.replace(":", "/")).read()
        if "sha256:" + hashlib.sha256(data).hexdigest() != d:
            sys.exit(f"{archive}: blob {d} does not match its digest")
        return json.loads(data)
    entries = json.load(t.extractfile("index.json"))["manifests"]
    if len(entries) != 1 or entries[0]["mediaType"] != "application/vnd.oci.image.index.v1+json":
        sys.exit(f"{archive}: expected one image index in index.json, found {entries}")
    digest = entries[0]["digest"]
    got = {}
    for m in blob(digest)["manifests"]:
        p = m["platform"]
        got[p["os"] + "/" + p["architecture"]] = m["digest"]
    if sorted(got) != sorted(want):
        sys.exit(f"{archive}: platforms {sorted(got)}, a release needs {sorted(want)}")
    print(digest)
    for p in want:
        print(p, got[p])
EOF
}

tls=()
$insecure && tls=(--dest-tls-verify=false)
auth=()
if [ -z "$oci_dir" ] && [ -n "${RELEASE_USERNAME:-}" ]; then
  authfile=$(mktemp)
  trap 'rm -f "$authfile"' EXIT
  login_tls=()
  $insecure && login_tls=(--tls-verify=false)
  printf '%s' "${RELEASE_PASSWORD:?RELEASE_PASSWORD unset}" |
    skopeo login "${login_tls[@]}" --authfile "$authfile" --username "$RELEASE_USERNAME" --password-stdin "${registry%%/*}" >/dev/null
  auth=(--dest-authfile "$authfile")
fi

mkdir -p "$out"
rev=$(git rev-parse HEAD 2>/dev/null || echo unknown)
digests="$out/digests.txt"
values="$out/values-images.yaml"
{
  echo "# edgewatt $version images, $rev: <reference>@<image index digest>, then each platform's manifest"
} >"$digests"
{
  echo "# edgewatt $version ($rev), written by hack/release.sh: the published images, pinned by"
  echo "# digest (helm install … -f values-images.yaml; the tag is then ignored)."
} >"$values"

declare -A pinned
for c in "${components[@]}"; do
  archive=target/images/edgewatt-$c.oci.tar
  [ -f "$archive" ] || die "$archive missing: run without --skip-build (or make images IMAGE_ARCHS=\"amd64 arm64\")"
  listing=$(index_of "$archive") || die "$archive: not a release archive"
  mapfile -t index <<<"$listing"
  digest=${index[0]}
  if [ -f "target/images/edgewatt-$c.digest" ] && [ "$(cat "target/images/edgewatt-$c.digest")" != "$digest" ]; then
    die "$archive: index digest $digest differs from target/images/edgewatt-$c.digest"
  fi
  repository=$prefix$c
  ref=$registry/$repository:$version
  if [ -n "$oci_dir" ]; then
    mkdir -p "$oci_dir"
    dest="oci:$oci_dir/edgewatt-$c:$version"
  else
    dest="docker://$ref"
  fi
  say "pushing $archive -> $dest"
  # --preserve-digests: refuse any conversion; the registry must serve what was tested.
  skopeo copy --quiet --all --preserve-digests "${tls[@]}" "${auth[@]}" "oci-archive:$archive" "$dest"
  inspect_tls=()
  $insecure && inspect_tls=(--tls-verify=false)
  inspect_auth=()
  [ ${#auth[@]} -eq 0 ] || inspect_auth=(--authfile "$authfile")
  served=sha256:$(skopeo inspect --raw "${inspect_tls[@]}" "${inspect_auth[@]}" "$dest" | sha256sum | cut -d' ' -f1)
  [ "$served" = "$digest" ] || die "$dest serves $served, the tested index is $digest"
  if $sign; then
    say "signing $registry/$repository@$digest (cosign, recursive: the index and each platform's image)"
    cosign sign --yes --recursive ${COSIGN_KEY:+--key "$COSIGN_KEY"} "$registry/$repository@$digest"
  fi
  {
    echo "$ref@$digest"
    for line in "${index[@]:1}"; do echo "  $line"; done
  } >>"$digests"
  printf '%s:\n  image:\n    registry: %s\n    repository: %s\n    digest: %s\n' \
    "$c" "$registry" "$repository" "$digest" >>"$values"
  pinned[$c]="$registry $repository $digest"
done
$sign || echo "# NOT SIGNED (--no-sign)" >>"$digests"

# The chart, pinned: registry, repository and digest of each component's `image` block in
# values.yaml (line edits that keep every comment; the tag stays, a digest overrides it).
if [ -z "$chart_dir" ]; then
  chart_dir=$out/edgewatt
  rm -rf "$chart_dir"
  cp -r charts/edgewatt "$chart_dir"
fi
[ -f "$chart_dir/values.yaml" ] || die "$chart_dir/values.yaml missing"
pins=()
for c in "${components[@]}"; do pins+=("$c" ${pinned[$c]}); done
python3 - "$chart_dir/values.yaml" "${pins[@]}" <<'EOF'
import re, sys
path, args = sys.argv[1], sys.argv[2:]
# component registry repository digest, four arguments each
pins = {args[i]: dict(zip(("registry", "repository", "digest"), args[i + 1:i + 4])) for i in range(0, len(args), 4)}
lines = open(path).read().split("\n")
done = set()
component, block = None, False
for i, line in enumerate(lines):
    top = re.match(r"^([A-Za-z][\w-]*):", line)
    if top:
        component, block = top.group(1), False
        continue
    if component in pins and re.match(r"^  image:\s*$", line):
        block = True
        continue
    if block and re.match(r"^  \S", line):
        block = False
    m = re.match(r"^(    )(registry|repository|digest):", line) if block else None
    if m:
        lines[i] = f'{m.group(1)}{m.group(2)}: "{pins[component][m.group(2)]}"'
        done.add((component, m.group(2)))
missing = [(c, k) for c in pins for k in ("registry", "repository", "digest") if (c, k) not in done]
if missing:
    sys.exit(f"{path}: no {missing} in the components' image blocks")
open(path, "w").write("\n".join(lines))
EOF

say "digests: $digests"
cat "$digests"
say "values: $values (helm install … -f $values); pinned chart: $chart_dir"
