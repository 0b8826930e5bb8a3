#!/usr/bin/env bash
# Regenerates Sources/TensorBoard/event.pb.swift from event.proto with Debian's protoc and the
# protoc-gen-swift of the swift-protobuf version that Package.swift resolves to (built here in a
# scratch package, so that the generated code matches the library it compiles against).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || apt-get install -y -qq protobuf-compiler >/dev/null
version=${SWIFT_PROTOBUF_VERSION:-1.39.0}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cat > "$scratch/Package.swift" <<SWIFT
// swift-tools-version:5.9
import PackageDescription
let package = Package(name: "protogen",
                      dependencies: [.package(url: "https://github.com/apple/swift-protobuf", exact: "$version")],
                      targets: [])
SWIFT
(cd "$scratch" && swift build -c release --product protoc-gen-swift >/dev/null)
protoc --plugin=protoc-gen-swift="$scratch/.build/release/protoc-gen-swift" \
       --swift_out=Sources/TensorBoard --proto_path=Sources/TensorBoard event.proto
echo "wrote Sources/TensorBoard/event.pb.swift"
