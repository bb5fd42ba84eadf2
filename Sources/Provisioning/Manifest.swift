import Foundation
import KeyRollPrimitives
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
///   - name: web
///     replicas: 3                          # one bundle per host: {bundleDir}/web.r1.json … web.r3.json
/// ```
/// CSV: a header row with `name` and any of `tags`, `notes`, `owners`, `bundle`, `replicas` (lists
/// separated by `;`).
public struct Manifest: Sendable, Equatable {
    public struct App: Sendable, Equatable {
        public var name: String
        public var tags: [String]
        public var notes: String?
        public var owners: [String]
        public var bundlePath: String
        /// How many replicas (hosts, each with its own key) the app runs on; nil: one host, one
        /// unnamed identity (the bundle at `bundlePath`).
        public var replicas: Int?

        public init(name: String, tags: [String] = [], notes: String? = nil, owners: [String] = [], bundlePath: String, replicas: Int? = nil) {
            self.name = name
            self.tags = tags
            self.notes = notes
            self.owners = owners
            self.bundlePath = bundlePath
            self.replicas = replicas
        }

        /// The replicas the manifest asks for: r1 … rN (empty for a single-host app).
        public var replicaNames: [ReplicaName] { (0..<(replicas ?? 0)).map { ReplicaName.numbered($0 + 1) } }

        /// Where the bundle of `replica` is written: `orders.json` → `orders.r2.json`.
        public func bundlePath(for replica: ReplicaName?) -> String {
            guard let replica else { return bundlePath }
            let base = bundlePath.hasSuffix(".json") ? String(bundlePath.dropLast(5)) : bundlePath
            return base + "." + replica.rawValue + ".json"
        }
    }

    public var apps: [App]
    public var bootstrapValidity: TimeInterval
    /// The most keyCredentials one application may hold (see ``ReplicaCapacity``).
    public var keyCredentialLimit: Int

    public init(apps: [App], bootstrapValidity: TimeInterval = 2 * 86_400, keyCredentialLimit: Int = ReplicaCapacity.defaultKeyCredentialLimit) {
        self.apps = apps
        self.bootstrapValidity = bootstrapValidity
        self.keyCredentialLimit = keyCredentialLimit
    }

    public struct ManifestError: Error, CustomStringConvertible, Equatable {
        public let description: String
        init(_ d: String) { description = d }
    }

    /// The largest manifest read (a 100,000-app manifest is a few MiB).
    public static let maximumBytes = 16 * 1024 * 1024

    /// Reads `path` (`.yaml`/`.yml` or `.csv`); relative bundle paths resolve against the manifest's folder.
    /// The whole manifest is checked before anything is written.
    public static func load(path: String) throws -> Manifest {
        var st = stat()
        guard stat(path, &st) == 0 else { throw ManifestError("Cannot read the manifest \(path): \(String(cString: strerror(errno))).") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw ManifestError("The manifest \(path) is not a regular file.") }
        guard st.st_size <= maximumBytes else {
            throw ManifestError("The manifest \(path) is \(st.st_size / 1_048_576) MiB; the limit is \(maximumBytes / 1_048_576) MiB. Split it into several manifests.")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw ManifestError("Cannot read the manifest \(path).") }
        guard let text = String(validating: data, as: UTF8.self) else {
            throw ManifestError("The manifest \(path) is not valid UTF-8 text. Save it as UTF-8.")
        }
        let dir = (path as NSString).deletingLastPathComponent
        let lower = path.lowercased()
        if lower.hasSuffix(".csv") { return try parseCSV(text, baseDir: dir) }
        if lower.hasSuffix(".yaml") || lower.hasSuffix(".yml") { return try parseYAML(text, baseDir: dir) }
        throw ManifestError("\(path): the manifest must end in .yaml, .yml or .csv.")
    }

    /// The most values a YAML manifest may expand to (aliases included): an alias bomb is refused
    /// after counting this many, in bounded time and memory.
    public static let maximumYAMLNodes = 1_000_000

    public static func parseYAML(_ text: String, baseDir: String) throws -> Manifest {
        let root: Any?
        do {
            guard let node = try Yams.compose(yaml: text) else { throw ManifestError("The YAML manifest is empty; it needs a top-level 'apps:' list.") }
            var budget = maximumYAMLNodes
            try checkNodes(node, budget: &budget)
            root = try Yams.load(yaml: text)
        } catch let e as ManifestError { throw e } catch { throw ManifestError("The YAML manifest is not valid YAML: \(error)") }
        guard let doc = root as? [String: Any], let apps = doc["apps"] as? [Any] else {
            throw ManifestError("The YAML manifest needs a top-level 'apps:' list.")
        }
        for key in doc.keys where !["apps", "defaults"].contains(key) {
            throw ManifestError("The YAML manifest has an unknown top-level key '\(key)'; known: apps, defaults.")
        }
        let defaults = doc["defaults"] as? [String: Any] ?? [:]
        for key in defaults.keys where !["bundleDir", "tags", "bootstrapValidityDays", "keyCredentialLimit"].contains(key) {
            throw ManifestError("The YAML manifest's defaults has an unknown key '\(key)'; known: bundleDir, tags, bootstrapValidityDays, keyCredentialLimit.")
        }
        let limit = try defaults["keyCredentialLimit"].map { try wholeNumber($0, "defaults.keyCredentialLimit") } ?? ReplicaCapacity.defaultKeyCredentialLimit
        let bundleDir = resolve((defaults["bundleDir"] as? String) ?? "bundles", baseDir)
        let defaultTags = strings(defaults["tags"])
        let days = (defaults["bootstrapValidityDays"] as? Double) ?? (defaults["bootstrapValidityDays"] as? Int).map(Double.init) ?? 2
        var out: [App] = []
        for (i, item) in apps.enumerated() {
            guard let a = item as? [String: Any], let name = a["name"] as? String else {
                throw ManifestError("apps[\(i)] has no 'name'.")
            }
            for key in a.keys where !appFields.contains(key) {
                throw ManifestError("apps[\(i)] ('\(name)') has an unknown field '\(key)'; known: \(appFields.joined(separator: ", ")).")
            }
            out.append(App(name: name, tags: defaultTags + strings(a["tags"]), notes: a["notes"] as? String, owners: strings(a["owners"]),
                           bundlePath: try BundleName.path(for: name, explicit: a["bundle"] as? String, in: bundleDir, row: "apps[\(i)]"),
                           replicas: try a["replicas"].map { try wholeNumber($0, "apps[\(i)] ('\(name)') replicas") }))
        }
        return try validated(Manifest(apps: out, bootstrapValidity: days * 86_400, keyCredentialLimit: limit))
    }

    public static func parseCSV(_ text: String, baseDir: String) throws -> Manifest {
        let rows = try CSV.parse(text)
        guard let header = rows.first?.map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }), let nameCol = header.firstIndex(of: "name") else {
            throw ManifestError("The CSV manifest needs a header row with a 'name' column.")
        }
        for column in header where !appFields.contains(column) {
            throw ManifestError("The CSV manifest has an unknown column '\(column)'; known: \(appFields.joined(separator: ", ")).")
        }
        let bundleDir = resolve("bundles", baseDir)
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
                           bundlePath: try BundleName.path(for: name, explicit: col(row, "bundle"), in: bundleDir, row: "CSV line \(n + 2)"),
                           replicas: try col(row, "replicas").map { try wholeNumber($0, "CSV line \(n + 2) ('\(name)') replicas") }))
        }
        return try validated(Manifest(apps: out, bootstrapValidity: 2 * 86_400))
    }

    static let appFields = ["name", "tags", "notes", "owners", "bundle", "replicas"]

    /// A whole number from YAML (an Int) or CSV (text).
    static func wholeNumber(_ v: Any, _ what: String) throws -> Int {
        if let n = v as? Int { return n }
        if let t = v as? String, let n = Int(t.trimmingCharacters(in: .whitespaces)) { return n }
        throw ManifestError("\(what) must be a whole number, not '\(String(describing: v).prefix(40))'.")
    }

    static func validated(_ m: Manifest) throws -> Manifest {
        var seen = Set<String>()
        var bundles: [String: String] = [:]
        let capacity = ReplicaCapacity(keyCredentialLimit: m.keyCredentialLimit)
        guard m.keyCredentialLimit >= 2, m.keyCredentialLimit <= ReplicaCapacity.entraItemLimit else {
            throw ManifestError("defaults.keyCredentialLimit is \(m.keyCredentialLimit); it must be 2 to \(ReplicaCapacity.entraItemLimit) (Entra's limit on items in an application's collections).")
        }
        for a in m.apps {
            guard !a.name.isEmpty, a.name.count <= 120 else { throw ManifestError("'\(a.name.prefix(40))…' is longer than 120 characters.") }
            guard seen.insert(a.name).inserted else { throw ManifestError("'\(a.name)' appears twice in the manifest; names must be unique.") }
            if let n = a.replicas { try capacity.check(replicas: n, app: a.name) }
            for path in a.replicas == nil ? [a.bundlePath] : a.replicaNames.map({ a.bundlePath(for: $0) }) {
                if let other = bundles.updateValue(a.name, forKey: path) {
                    throw ManifestError("'\(other)' and '\(a.name)' would both write the bundle \(path); give one of them its own 'bundle' file name.")
                }
            }
            for tag in a.tags where tag.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) || tag.count > 256 {
                throw ManifestError("'\(a.name)' has a tag with control characters or over 256 characters.")
            }
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

    /// Checks a composed YAML document before it is turned into values: at most `budget` values
    /// (aliases expanded: an alias bomb stops here, in bounded time), and mapping keys that are
    /// plain strings (a key such as `[a]` or a `<<` merge key crashes the YAML library's constructor).
    private static func checkNodes(_ node: Node, budget: inout Int) throws {
        budget -= 1
        if budget < 0 {
            throw ManifestError("The YAML manifest expands to more than \(maximumYAMLNodes) values (through aliases?); refusing to read it. Write the values out, or split the manifest.")
        }
        switch node {
        case .scalar, .alias: return
        case .sequence(let s): for item in s { try checkNodes(item, budget: &budget) }
        case .mapping(let m):
            for (key, value) in m {
                guard case .scalar(let k) = key else {
                    throw ManifestError("The YAML manifest has a mapping key that is not a plain string (line \(key.mark?.line ?? 0)); keys are names like 'apps' or 'name'.")
                }
                if k.string == "<<" { throw ManifestError("The YAML manifest uses a merge key ('<<', line \(key.mark?.line ?? 0)); write the values out instead.") }
                try checkNodes(value, budget: &budget)
            }
        }
    }
}

/// Where an app's bundle (which holds a private key) is written. A name is data, never a path:
/// it maps to a file name of letters, digits, `-`, `_` and `.` (any other character becomes `_`, a
/// leading `.` too), always inside the bundle folder. An explicit `bundle` is a file name or
/// relative path that must stay inside the bundle folder. Names with NUL or control characters are
/// refused; two apps that map to one file are refused by the manifest check.
public enum BundleName {
    public static func fileName(for name: String) -> String {
        var out = String(name.unicodeScalars.map { s -> Character in
            s.isASCII && (CharacterSet.alphanumerics.contains(s) || s == "-" || s == "_" || s == ".") ? Character(s) : "_"
        })
        if out.hasPrefix(".") { out = "_" + out.dropFirst() }
        return out + ".json"
    }

    public static func path(for name: String, explicit: String?, in bundleDir: String, row: String) throws -> String {
        if name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw Manifest.ManifestError("\(row): the name contains NUL or control characters; names must be printable.")
        }
        guard let explicit else { return bundleDir + "/" + fileName(for: name) }
        let parts = explicit.split(separator: "/", omittingEmptySubsequences: true)
        guard !explicit.hasPrefix("/"), !parts.isEmpty, !parts.contains(where: { $0 == ".." || $0 == "." }),
              !explicit.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw Manifest.ManifestError("\(row): bundle '\(explicit)' must be a relative path inside the bundle folder (no leading /, no '..', no control characters).")
        }
        return bundleDir + "/" + parts.joined(separator: "/")
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
