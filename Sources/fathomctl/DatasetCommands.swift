import ArgumentParser
import FathomControl
import FathomDataset
#if canImport(Glibc)
import Glibc
#endif

struct DatasetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dataset", abstract: "Build a read-only dataset image from a directory and publish it to hosts.",
        subcommands: [Build.self, Verify.self, Publish.self])

    struct Build: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pack DIR into an erofs (default) or ext4 image and write IMAGE.manifest.json beside it.")
        @Argument(help: "The directory to pack.") var directory: String
        @Option(name: [.short, .customLong("output")], help: "The image file to write.") var output: String
        @Option(help: "erofs (compressed, read-only; mount -t erofs) or ext4 (mount -o ro,noload).") var format: String = "erofs"

        func validate() throws {
            guard DatasetBuilder.Format(rawValue: format) != nil else { throw ValidationError("--format must be erofs or ext4") }
        }

        func run() throws {
            var builder = DatasetBuilder(source: directory, image: output, format: DatasetBuilder.Format(rawValue: format)!)
            builder.progress = { fputs("  \($0)\n", stderr) }
            do {
                let m = try builder.build()
                print("\(output): \(m.format), \(m.imageBytes) bytes, \(m.files) files, sha256 \(m.sha256)")
                print("manifest: \(DatasetManifest.path(forImage: output))")
                if let uuid = m.namespaceUUID { print("hosts will find it as /dev/disk/by-id/nvme-uuid.\(uuid)") }
            } catch {
                throw ValidationError.failure("\(error)")
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check an image against its manifest (size and SHA-256).")
        @Argument(help: "The image.") var image: String

        func run() throws {
            do {
                let m = try DatasetManifest.load(forImage: image)
                try DatasetCheck.verify(image: image, manifest: m)
                print("\(image): matches its manifest (sha256 \(m.sha256))")
            } catch {
                throw ValidationError.failure("\(error)")
            }
        }
    }

    struct Publish: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Export an image read-only to many hosts: checks it against its manifest, then adds it to a subsystem (created if needed). Idempotent.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The image (its manifest must sit beside it).") var image: String
        @Option(help: "Subsystem NQN to publish in.") var subsystem: String
        @Option(parsing: .upToNextOption, help: "Hosts that may attach it (default: any host).") var hosts: [String] = []
        @Option(help: "Namespace ID (default: the lowest free one).") var nsid: UInt32?
        @Option(help: "Port IDs for a new subsystem (default: every port that serves subsystems).") var port: [UInt16] = []

        func run() throws {
            let path = DatasetTree.absolute(image)
            let manifest: DatasetManifest
            do {
                manifest = try DatasetManifest.load(forImage: path)
                fputs("  checking \(path) against its manifest\n", stderr)
                try DatasetCheck.verify(image: path, manifest: manifest)
            } catch {
                throw ValidationError.failure("\(error)")
            }
            var r = ControlRequest("dataset.publish")
            r.path = path
            r.subsystem = subsystem
            r.hosts = hosts
            r.nsid = nsid
            r.ports = port
            r.sha256 = manifest.sha256
            try global.run(r)
        }
    }
}
