import Foundation
import Yams

/// The apps a provisioning run should make, from YAML or CSV.
///
/// YAML:
/// ```yaml
/// defaults: { bundleDir: bundles, tags: [team:platform], bootstrapValidityDays: 2 }
/// apps:
///   - name: orders-api
///     tags: [env:prod]
///     notes: on-call team-a
///     owners: [ops@contoso.com]
///     bundle: secrets/orders-api.json      # default: {bundleDir}/{name}.json
/// ```
/// CSV: a header row with `name` and any of `tags`, `notes`, `owners`, `bundle` (lists separated by `;`).
public struct Manifest: Sendable, Equatable {
    public struct App: Sendable, Equatable {
        public var name: String
        public var tags: [String]
        public var notes: String?
        public var owners: [String]
        public var bundlePath: String

        public init(name: String, tags: [String] = [], notes: String? = nil, owners: [String] = [], bundlePath: String) {
            self.name = name
            self.tags = tags
            self.notes = notes
            self.owners = owners
            self.bundlePath = bundlePath
        }
    }

    public var apps: [App]
    public var bootstrapValidity: TimeInterval

    public init(apps: [App], bootstrapValidity: TimeInterval = 2 * 86_400) {
        self.apps = apps
        self.bootstrapValidity = bootstrapValidity
    }

    public struct ManifestError: Error, CustomStringConvertible, Equatable {
        public let description: String
        init(_ d: String) { description = d }
    }

    /// Reads `path` (`.yaml`/`.yml` or `.csv`); relative bundle paths resolve against the manifest's folder.
    public static func load(path: String) throws -> Manifest {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ManifestError("Cannot read the manifest \(path).")
        }
        let dir = (path as NSString).deletingLastPathComponent
        let lower = path.lowercased()
        if lower.hasSuffix(".csv") { return try parseCSV(text, baseDir: dir) }
        if lower.hasSuffix(".yaml") || lower.hasSuffix(".yml") { return try parseYAML(text, baseDir: dir) }
        throw ManifestError("\(path): the manifest must end in .yaml, .yml or .csv.")
    }

    public static func parseYAML(_ text: String, baseDir: String) throws -> Manifest {
        let root: Any?
        do { root = try Yams.load(yaml: text) } catch { throw ManifestError("The YAML manifest is not valid YAML: \(error)") }
        guard let doc = root as? [String: Any], let apps = doc["apps"] as? [Any] else {
            throw ManifestError("The YAML manifest needs a top-level 'apps:' list.")
        }
        let defaults = doc["defaults"] as? [String: Any] ?? [:]
        let bundleDir = (defaults["bundleDir"] as? String) ?? "bundles"
        let defaultTags = strings(defaults["tags"])
        let days = (defaults["bootstrapValidityDays"] as? Double) ?? (defaults["bootstrapValidityDays"] as? Int).map(Double.init) ?? 2
        var out: [App] = []
        for (i, item) in apps.enumerated() {
            guard let a = item as? [String: Any], let name = a["name"] as? String else {
                throw ManifestError("apps[\(i)] has no 'name'.")
            }
            out.append(App(name: name, tags: defaultTags + strings(a["tags"]), notes: a["notes"] as? String, owners: strings(a["owners"]),
                           bundlePath: resolve((a["bundle"] as? String) ?? "\(bundleDir)/\(name).json", baseDir)))
        }
        return try validated(Manifest(apps: out, bootstrapValidity: days * 86_400))
    }

    public static func parseCSV(_ text: String, baseDir: String) throws -> Manifest {
        let rows = try CSV.parse(text)
        guard let header = rows.first?.map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }), let nameCol = header.firstIndex(of: "name") else {
            throw ManifestError("The CSV manifest needs a header row with a 'name' column.")
        }
        func col(_ row: [String], _ name: String) -> String? {
            guard let i = header.firstIndex(of: name), i < row.count else { return nil }
            let v = row[i].trimmingCharacters(in: .whitespaces)
            return v.isEmpty ? nil : v
        }
        var out: [App] = []
        for (n, row) in rows.dropFirst().enumerated() where !(row.count == 1 && row[0].isEmpty) {
            guard nameCol < row.count, !row[nameCol].trimmingCharacters(in: .whitespaces).isEmpty else {
                throw ManifestError("CSV line \(n + 2) has no name.")
            }
            let name = row[nameCol].trimmingCharacters(in: .whitespaces)
            let list = { (s: String?) in (s ?? "").split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
            out.append(App(name: name, tags: list(col(row, "tags")), notes: col(row, "notes"), owners: list(col(row, "owners")),
                           bundlePath: resolve(col(row, "bundle") ?? "bundles/\(name).json", baseDir)))
        }
        return try validated(Manifest(apps: out, bootstrapValidity: 2 * 86_400))
    }

    static func validated(_ m: Manifest) throws -> Manifest {
        var seen = Set<String>()
        for a in m.apps {
            guard !a.name.isEmpty, a.name.count <= 120 else { throw ManifestError("'\(a.name)' is longer than 120 characters.") }
            guard seen.insert(a.name).inserted else { throw ManifestError("'\(a.name)' appears twice in the manifest; names must be unique.") }
        }
        guard m.bootstrapValidity >= 3600, m.bootstrapValidity <= 7 * 86_400 else {
            throw ManifestError("bootstrapValidityDays must be between 1 hour and 7 days: a bootstrap certificate is meant to be short-lived.")
        }
        return m
    }

    private static func strings(_ v: Any?) -> [String] {
        if let a = v as? [Any] { return a.map { "\($0)" } }
        if let s = v as? String { return [s] }
        return []
    }

    private static func resolve(_ p: String, _ base: String) -> String {
        p.hasPrefix("/") || base.isEmpty ? p : base + "/" + p
    }
}

/// RFC 4180 CSV: quoted fields, doubled quotes, CRLF or LF.
enum CSV {
    static func parse(_ text: String) throws -> [[String]] {
        var rows: [[String]] = [], row: [String] = [], field = "", quoted = false, i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            if quoted {
                if c == "\"" {
                    let n = text.index(after: i)
                    if n < text.endIndex, text[n] == "\"" { field.append("\""); i = n } else { quoted = false }
                } else { field.append(c) }
            } else {
                switch c {
                case "\"": quoted = true
                case ",": row.append(field); field = ""
                case "\n", "\r\n": row.append(field); rows.append(row); row = []; field = ""
                case "\r": break
                default: field.append(c)
                }
            }
            i = text.index(after: i)
        }
        if quoted { throw Manifest.ManifestError("The CSV manifest has an unterminated quoted field.") }
        if !field.isEmpty || !row.isEmpty { row.append(field); rows.append(row) }
        return rows
    }
}
