// swift-tools-version:6.0
// A program that trains with Lockstep as a library: a small network on two interleaved spirals
// generated in code (see Sources/Spirals/main.swift and ../README.md).
import PackageDescription

let package = Package(
    name: "Spirals",
    dependencies: [.package(name: "Lockstep", path: "../..")],
    targets: [
        .executableTarget(name: "spirals", dependencies: [.product(name: "Lockstep", package: "Lockstep")],
                          path: "Sources/Spirals"),
    ],
    swiftLanguageModes: [.v5]
)
