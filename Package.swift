// swift-tools-version:6.0
import PackageDescription

// Layers follow ../shared/DESIGN.md: C modules at the bottom, then pure wire values,
// the subsystem model, storage, the io_uring engine, config, and the executables.
// Language mode 5: the engine shares state between reactor threads through explicit
// atomics and locks, which Swift 6's Sendable checking cannot express without noise.
let swift5: [SwiftSetting] = [.swiftLanguageMode(.v5)]
// The engine's per-command state lives in class properties and raw slot memory owned by
// one reactor thread; dynamic exclusivity checks on them cost ~3% of a 4 KiB read in
// profiles (swift_beginAccess) and protect nothing a single-threaded owner can break.
let engine: [SwiftSetting] = swift5 + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "Fathom",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "fathomd", targets: ["fathomd"]),
        .executable(name: "fathom-perf", targets: ["fathom-perf"]),
        .executable(name: "fathomctl", targets: ["fathomctl"]),
        .library(name: "NVMeInitiator", targets: ["NVMeInitiator"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        .systemLibrary(name: "CLiburing", path: "Sources/CLiburing"),
        .systemLibrary(name: "CISAL", path: "Sources/CISAL"),
        .systemLibrary(name: "CNVMeTypes", path: "Sources/CNVMeTypes"),
        .systemLibrary(name: "CCrypto", path: "Sources/CCrypto"),
        .target(name: "CMappingGuard"),
        .target(name: "NVMeWire", dependencies: ["CISAL", "CNVMeTypes"], swiftSettings: swift5),
        .target(name: "FathomTarget", dependencies: ["NVMeWire", "CNVMeTypes"], swiftSettings: engine),
        .target(name: "FathomStorage", dependencies: ["NVMeWire", "CLiburing", "CMappingGuard"], swiftSettings: swift5),
        .target(name: "FathomConfig", dependencies: ["NVMeWire"], swiftSettings: swift5),
        .target(
            name: "FathomReactor",
            dependencies: [
                "NVMeWire", "FathomTarget", "FathomStorage", "FathomConfig", "CLiburing", "CNVMeTypes",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: engine),
        .target(name: "FathomDataset", dependencies: ["CCrypto"], swiftSettings: swift5),
        .target(name: "FathomControl", dependencies: ["FathomConfig", "FathomDataset", "FathomReactor", "FathomStorage", "FathomTarget", "NVMeWire"],
                swiftSettings: swift5),
        .target(name: "NVMeInitiator", dependencies: ["NVMeWire", "CNVMeTypes"], swiftSettings: swift5),
        .executableTarget(
            name: "fathomd",
            dependencies: [
                "FathomReactor", "FathomConfig", "FathomControl",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swift5),
        .executableTarget(
            name: "fathomctl",
            dependencies: ["FathomControl", "FathomDataset", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swift5),
        .executableTarget(
            name: "fathom-perf",
            dependencies: [
                "NVMeInitiator", "NVMeWire", "CLiburing",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: swift5),
        // Helpers shared by the integration test targets (test data, polling).
        .target(name: "FathomTestSupport", path: "Tests/FathomTestSupport", swiftSettings: swift5),
        .testTarget(name: "NVMeWireTests", dependencies: ["NVMeWire"], swiftSettings: swift5),
        .testTarget(name: "FathomTargetTests", dependencies: ["FathomTarget", "NVMeWire", "CNVMeTypes"], swiftSettings: swift5),
        .testTarget(name: "FathomStorageTests", dependencies: ["FathomStorage", "CLiburing", "FathomTestSupport"], swiftSettings: swift5),
        .testTarget(name: "FathomConfigTests", dependencies: ["FathomConfig"], swiftSettings: swift5),
        .testTarget(
            name: "FathomReactorTests",
            dependencies: ["FathomReactor", "FathomConfig", "FathomStorage", "CLiburing", "NVMeInitiator", "NVMeWire", "CNVMeTypes",
                           "FathomTestSupport"],
            swiftSettings: swift5),
        .testTarget(
            name: "FathomControlTests",
            dependencies: ["FathomControl", "FathomConfig", "FathomDataset", "FathomReactor", "FathomStorage", "NVMeInitiator", "NVMeWire", "FathomTestSupport"],
            swiftSettings: swift5),
        .testTarget(name: "FathomDatasetTests", dependencies: ["FathomDataset"], swiftSettings: swift5),
        .testTarget(name: "NVMeInitiatorTests", dependencies: ["NVMeInitiator", "NVMeWire"], swiftSettings: swift5),
    ]
)
