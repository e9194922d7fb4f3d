// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Tollgate",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "tollgate", targets: ["tollgate"]),
        .library(name: "Tollgate", targets: ["Tollgate"]),
    ],
    targets: [
        // MARK: C libraries from Debian, one module each, each imported by exactly one Swift module.
        .systemLibrary(
            name: "CHiredis", path: "Sources/CHiredis", pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(
            name: "CLibpq", path: "Sources/CLibpq", pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]),
        .systemLibrary(
            name: "CMicroHTTPD", path: "Sources/CMicroHTTPD", pkgConfig: "libmicrohttpd",
            providers: [.apt(["libmicrohttpd-dev"])]),

        // MARK: Swift wrappers over the C libraries; no C type leaves them.
        .target(name: "RedisClient", dependencies: ["CHiredis"]),
        .target(name: "PostgresClient", dependencies: ["CLibpq"]),
        .target(name: "HTTPServer", dependencies: ["CMicroHTTPD"]),

        // MARK: Pure core: money, pricing, months, validation. No I/O.
        .target(name: "TollgateCore"),

        // MARK: The service: engine, writer, migrations, CLI. Lua, SQL and pricing are embedded at build time.
        .executableTarget(name: "embed-resources", path: "Sources/EmbedResources"),
        .plugin(
            name: "EmbedResourcesPlugin", capability: .buildTool(),
            dependencies: ["embed-resources"], path: "Sources/EmbedResourcesPlugin"),
        .target(
            name: "Tollgate",
            dependencies: ["TollgateCore", "RedisClient", "PostgresClient", "HTTPServer"],
            plugins: ["EmbedResourcesPlugin"]),
        .executableTarget(name: "tollgate", dependencies: ["Tollgate"]),

        // MARK: Tests: pure unit tests, and integration tests against the real servers ops/test starts.
        .testTarget(name: "TollgateCoreTests", dependencies: ["TollgateCore"]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["Tollgate", "TollgateCore", "RedisClient", "PostgresClient"]),
    ],
    swiftLanguageModes: [.v6]
)
