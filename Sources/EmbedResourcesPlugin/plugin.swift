import Foundation
import PackagePlugin

/// Embeds `lua/*.lua`, `ops/migrations/*.sql` and `ops/pricing.json` into the target as Swift string
/// literals. Those folders stay the single source of the text; the binary needs no files at run time.
@main
struct EmbedResourcesPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let root = context.package.directoryURL
        let fm = FileManager.default
        func files(in folder: String, ending suffix: String) -> [URL] {
            let dir = root.appending(path: folder)
            let names = (try? fm.contentsOfDirectory(atPath: dir.path)) ?? []
            return names.filter { $0.hasSuffix(suffix) }.sorted().map { dir.appending(path: $0) }
        }
        var inputs = files(in: "lua", ending: ".lua") + files(in: "ops/migrations", ending: ".sql")
        inputs.append(root.appending(path: "ops/pricing.json"))
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedResources.swift")
        return [
            .buildCommand(
                displayName: "Embedding Lua scripts, migrations and pricing",
                executable: try context.tool(named: "embed-resources").url,
                arguments: [output.path, root.path] + inputs.map(\.path),
                inputFiles: inputs,
                outputFiles: [output])
        ]
    }
}
