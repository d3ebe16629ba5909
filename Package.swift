// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "brokerd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "brokerd", targets: ["brokerd"]),
        .executable(name: "brokerctl", targets: ["brokerctl"]),
        .executable(name: "brokerbench", targets: ["brokerbench"]),
        .executable(name: "brokersoak", targets: ["brokersoak"]),
        .library(name: "BrokerClient", targets: ["BrokerClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        // CRC-32C with the SSE4.2 instruction, behind a run-time check (LogStore falls back to its tables).
        .target(name: "CCRC32C"),
        // A prefetch hint (static inline C): the dedupe table starts its cache misses for a whole request at once.
        .target(name: "CPrefetch"),
        .target(name: "CFileIO"),

        // Leaf modules: pure logic, no NIOPosix, no imports of each other.
        .target(
            name: "WireProtocol",
            dependencies: ["RawBytes", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // A raw big-endian writer the two encoders share (they may not import each other).
        .target(name: "RawBytes", dependencies: [.product(name: "NIOCore", package: "swift-nio")]),
        .target(
            name: "LogStore",
            dependencies: [
                "CLZ4", "CCRC32C", "CPrefetch", "CFileIO", "Locking", "RawBytes",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                // fsync latency, group-commit size and append latency are measured where they happen.
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "TopicRouter",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ]
        ),
        .target(name: "Throttle", dependencies: ["Locking"]),

        // Shared state behind a pthread lock that ThreadSanitizer understands (see Locked.swift).
        .target(
            name: "Locking",
            dependencies: [.product(name: "NIOConcurrencyHelpers", package: "swift-nio")]
        ),

        // I/O: connection handling, lifecycle.
        .target(
            name: "BrokerServer",
            dependencies: [
                "WireProtocol", "LogStore", "TopicRouter", "Throttle", "Locking", "RawBytes", "CFileIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "BrokerClient",
            dependencies: [
                "Locking",
                "WireProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .executableTarget(
            name: "brokerd",
            dependencies: [
                "BrokerServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                // Only the executable bootstraps the Prometheus factory; the libraries use swift-metrics.
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "brokerctl",
            dependencies: [
                "BrokerClient", "WireProtocol", "TopicRouter",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "brokerbench",
            dependencies: [
                "BrokerClient", "BrokerServer", "WireProtocol", "TopicRouter", "LogStore", "Locking",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),

        // Crash-consistency soak (`make soak`): brokerd as a child process, SIGKILLed under load.
        .executableTarget(
            name: "brokersoak",
            dependencies: [
                "BrokerClient", "WireProtocol", "TopicRouter", "Locking",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // libFuzzer harnesses (`make fuzz`); an ordinary build links them as empty executables.
        .executableTarget(
            name: "FuzzFrames",
            dependencies: ["WireProtocol", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .executableTarget(name: "FuzzConfig", dependencies: ["TopicRouter"]),
        .executableTarget(name: "FuzzBatch", dependencies: ["LogStore"]),

        .testTarget(
            name: "WireProtocolTests",
            dependencies: [
                "WireProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "LogStoreTests",
            dependencies: [
                "LogStore", "Locking", "CFileIO", "CLZ4", .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(name: "TopicRouterTests", dependencies: ["TopicRouter"]),
        // brokerbench's own readings of the machine (CPUWindow's run-queue waits and disk counters), e2e-latency's
        // schedule, its timelines and `brokerbench sweep`'s summary and plot.
        .testTarget(
            name: "BrokerBenchTests",
            dependencies: ["brokerbench", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(name: "ThrottleTests", dependencies: ["Throttle"]),
        .testTarget(
            name: "BrokerServerTests",
            dependencies: [
                "BrokerServer", "BrokerClient", "WireProtocol", "TopicRouter", "LogStore", "Locking",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
