// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
]

let package = Package(
    name: "slipway",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "slipway", targets: ["slipway"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        .executableTarget(
            name: "slipway",
            dependencies: ["SlipwayCLI"],
            swiftSettings: strict,
            // Not position-independent: a PIE of this size has ~150,000 relative relocations, and applying
            // them (a written page each) was a third of every command's start (5.6 ms -> 4.0 ms for
            // `slipway --version`). The trade: the executable's own code is no longer at a random address
            // (the libraries it loads still are); it is Swift, and takes no native plug-ins.
            linkerSettings: [.unsafeFlags(["-Xlinker", "--no-export-dynamic", "-Xclang-linker", "-no-pie"])]
        ),
        .target(
            name: "SlipwayCLI",
            dependencies: [
                "SlipwayCore", "SlipwayStore", "SlipwayEngine", "SlipwayArtifacts", "SlipwayDeploy", "SlipwayServer", "SlipwayRunner",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "SlipwayCore",
            dependencies: [
                .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "SlipwayStore",
            dependencies: [
                "SlipwayCore", "CSlipwaySQLite", "CSlipwaySystem",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "SlipwayEngine",
            dependencies: ["SlipwayCore", "SlipwayStore", "SlipwayArtifacts", "SlipwayDeploy", "CSlipwaySystem"],
            swiftSettings: strict
        ),
        .target(name: "CSlipwaySystem"),
        // The store's hot-path statements, bound and stepped in C on GRDB's own prepared statements.
        .target(name: "CSlipwaySQLite", linkerSettings: [.linkedLibrary("sqlite3")]),
        .target(
            name: "SlipwayRunner",
            dependencies: ["SlipwayCore", "SlipwayStore", "SlipwayEngine", "SlipwayDeploy"],
            swiftSettings: strict
        ),
        // `slipway serve`: webhooks, the run queue and the REST API on Hummingbird 2.
        .target(
            name: "SlipwayServer",
            dependencies: [
                "SlipwayCore", "SlipwayStore", "SlipwayEngine", "SlipwayDeploy",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "SlipwayArtifacts",
            dependencies: [
                "SlipwayCore", "SlipwayStore",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "SlipwayDeploy",
            dependencies: [
                "SlipwayCore", "CSlipwaySystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Real peers for tests (sshd on loopback), shared by the deploy and end-to-end tests.
        .target(name: "SlipwayTestSupport", dependencies: ["SlipwayDeploy"], path: "Tests/SlipwayTestSupport", swiftSettings: strict),
        .testTarget(name: "SlipwayDeployTests", dependencies: ["SlipwayDeploy", "SlipwayCore", "SlipwayTestSupport"], swiftSettings: strict),
        .testTarget(name: "SlipwayCoreTests", dependencies: ["SlipwayCore", "SlipwayTestSupport"], exclude: ["Fixtures"], swiftSettings: strict),
        .testTarget(name: "SlipwayArtifactsTests", dependencies: ["SlipwayArtifacts", "SlipwayCore", "SlipwayStore", "SlipwayTestSupport"], exclude: ["Fixtures"], swiftSettings: strict),
        .testTarget(name: "SlipwayServerTests", dependencies: [
            "SlipwayServer", "SlipwayStore", "SlipwayCore", "SlipwayEngine", "SlipwayTestSupport",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "GRDB", package: "GRDB.swift"),
        ], swiftSettings: strict),
        .testTarget(name: "SlipwayEngineTests", dependencies: ["SlipwayEngine", "SlipwayStore", "SlipwayCore", "CSlipwaySystem", "SlipwayTestSupport"], swiftSettings: strict),
        // Depends on the executable so `swift test` builds the binary these tests run.
        .testTarget(name: "SlipwayEndToEndTests", dependencies: ["slipway", "SlipwayCLI", "SlipwayCore", "SlipwayDeploy", "SlipwayTestSupport"], swiftSettings: strict),
    ]
)
