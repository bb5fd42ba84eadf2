import AgentSupervisor
import Foundation
import KeyRoll
import KeyRollPrimitives
import Provisioning
import Testing
import TestSupport

/// What operators install and load: the Prometheus rules (with promtool's own tests), the Grafana
/// dashboard, the systemd units (verified and scored by systemd-analyze), and the packages.
@Suite(.serialized) struct DeployTests {
    static let root = Tools.packageRoot

    /// Fails (never skips) when a tool the test needs is missing: `scripts/test` installs them.
    func require(_ tool: String, package: String) throws -> String {
        for dir in ["/usr/bin", "/usr/local/bin", "/bin"] where FileManager.default.isExecutableFile(atPath: dir + "/" + tool) { return dir + "/" + tool }
        throw ToolError("\(tool) is not installed: apt-get install \(package) (scripts/test does)")
    }

    /// Every metric family the agent exports, from its own registry.
    static var exportedMetrics: Set<String> {
        let registry = MetricsRegistry.agent()
        _ = TokenEndpoint(rollers: [], metrics: registry, clock: SystemClock(), logger: .init(label: "t"))
        return registry.describedFamilies.union(fleetAuditMetrics).union(Supervisor.exportedFamilies)
    }

    /// The families `keyroll audit --credentials --metrics-file` writes (the fleet's migration).
    static var fleetAuditMetrics: Set<String> {
        let now = Date()
        let empty = MigrationProgress.of(FleetAudit(generatedAt: now, expiringWithinDays: 30, apps: []),
                                         view: CredentialReport.View(generatedAt: now, windowDays: 14, retentionDays: 30, credentials: []), expiringWithinDays: 30)
        return Set(empty.prometheusText.split(separator: "\n").compactMap { $0.hasPrefix("# TYPE ") ? $0.split(separator: " ")[2].description : nil })
    }

    /// `keyroll_…` names used in a text (PromQL).
    static func metricNames(in text: String) -> Set<String> {
        let regex = try! NSRegularExpression(pattern: "keyroll_[a-z_]+")
        return Set(regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).map { String(text[Range($0.range, in: text)!]) })
    }

    /// GitHub-style anchors of the headings of a Markdown file.
    static func anchors(_ path: String) throws -> Set<String> {
        Set(try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").filter { $0.hasPrefix("#") }.map { line in
            let title = line.drop { $0 == "#" }.trimmingCharacters(in: .whitespaces).lowercased()
            return String(title.compactMap { c -> Character? in c.isLetter || c.isNumber ? c : (c == " " || c == "-" ? "-" : nil) })
        })
    }

    @Test func prometheusRulesPassTheirPromtoolTestsAndPointAtRunbooks() async throws {
        let promtool = try require("promtool", package: "prometheus")
        let rules = Self.root + "/deploy/prometheus/keyroll.rules.yml"
        let check = try await Tools.run([promtool, "check", "rules", rules])
        #expect(check.status == 0, "\(check.stdout) \(check.stderr)")
        let test = try await Tools.run([promtool, "test", "rules", Self.root + "/deploy/prometheus/keyroll.rules.test.yml"])
        #expect(test.status == 0, "\(test.stdout) \(test.stderr)")
        let text = try String(contentsOfFile: rules, encoding: .utf8)
        // every alert is tested, firing and (where it has a `for:` or threshold) not firing
        let alerts = text.split(separator: "\n").compactMap { $0.trimmingCharacters(in: .whitespaces).hasPrefix("- alert: ") ? $0.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) } : nil }
        let tests = try String(contentsOfFile: Self.root + "/deploy/prometheus/keyroll.rules.test.yml", encoding: .utf8)
        #expect(alerts.count >= 9)
        for a in alerts { #expect(tests.contains("alertname: \(a)"), "\(a) has no promtool test") }
        // every runbook names a section of docs/operations.md that exists
        let anchors = try Self.anchors(Self.root + "/docs/operations.md")
        let runbooks = text.split(separator: "\n").compactMap { line -> String? in
            guard let r = line.range(of: "runbook: docs/operations.md#") else { return nil }
            return String(line[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        #expect(runbooks.count == alerts.count, "one runbook per alert")
        for r in runbooks { #expect(anchors.contains(r), "docs/operations.md has no section #\(r)") }
        // and uses only metrics the agent exports
        let unknown = Self.metricNames(in: text).subtracting(Self.exportedMetrics)
        #expect(unknown.isEmpty, "rules use metrics the agent does not export: \(unknown)")
    }

    @Test func theGrafanaDashboardReadsOnlyExportedMetrics() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.root + "/deploy/grafana/keyroll.json"))
        let dash = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let panels = try #require(dash["panels"] as? [[String: Any]])
        #expect(panels.count >= 10)
        var exprs: [String] = []
        for p in panels {
            let targets = try #require(p["targets"] as? [[String: Any]], "panel \(p["title"] ?? "?") has no targets")
            exprs += targets.compactMap { $0["expr"] as? String }
        }
        let used = Self.metricNames(in: exprs.joined(separator: "\n"))
        #expect(used.count >= 10, "\(used)")
        #expect(used.subtracting(Self.exportedMetrics).isEmpty, "the dashboard reads metrics the agent does not export: \(used.subtracting(Self.exportedMetrics))")
    }

    /// The units as installed, with ExecStart pointed at binaries that exist here.
    func units(_ dir: String) throws -> (agent: String, socket: String, transition: String, app: String) {
        let agent = try String(contentsOfFile: Self.root + "/deploy/systemd/keyroll-agent.service", encoding: .utf8)
            .replacingOccurrences(of: "/usr/bin/keyroll ", with: Binaries.keyroll + " ")
        let app = try String(contentsOfFile: Self.root + "/deploy/systemd/example-app.service", encoding: .utf8)
        try Tools.write(agent, to: dir + "/keyroll-agent.service")
        try Tools.write(try String(contentsOfFile: Self.root + "/deploy/systemd/keyroll-agent.socket", encoding: .utf8), to: dir + "/keyroll-agent.socket")
        try Tools.write(try String(contentsOfFile: Self.root + "/deploy/systemd/keyroll-agent-transition.socket", encoding: .utf8), to: dir + "/keyroll-agent-transition.socket")
        try Tools.write(app, to: dir + "/example-app.service")
        return (dir + "/keyroll-agent.service", dir + "/keyroll-agent.socket", dir + "/keyroll-agent-transition.socket", dir + "/example-app.service")
    }

    @Test func theSystemdUnitsVerifyAndTheAgentIsSandboxed() async throws {
        try Binaries.require()
        let analyze = try require("systemd-analyze", package: "systemd")
        let dir = try Tools.temporaryDirectory("keyroll-units")
        let (agent, socket, transition, app) = try units(dir)
        // together: the service requires the socket unit beside it
        let v = try await Tools.run([analyze, "verify", agent, socket, transition, app])
        #expect(v.status == 0 && v.stderr.isEmpty, "\(v.stdout) \(v.stderr)")
        let text = try String(contentsOfFile: agent, encoding: .utf8)
        for line in ["ProtectSystem=strict", "ReadWritePaths=/var/lib/keyroll", "NoNewPrivileges=yes", "PrivateTmp=yes", "User=keyroll",
                     "CapabilityBoundingSet=\n", "UMask=0077"] {
            #expect(text.contains(line), "the agent's unit lacks \(line)")
        }
        // the token endpoint: a privileged loopback port PID 1 binds and passes (no capability for the agent)
        let socketText = try String(contentsOfFile: socket, encoding: .utf8)
        let listen = try #require(socketText.split(separator: "\n").first { $0.hasPrefix("ListenStream=") }.map { String($0.dropFirst(13)) })
        let port = try #require(Int(listen.split(separator: ":").last ?? ""))
        #expect(listen.hasPrefix("127.0.0.1:") && port < 1024, "ListenStream=\(listen): a port ≥ 1024 can be bound by any local user")
        #expect(socketText.contains("FileDescriptorName=token-endpoint") && text.contains("Wants=keyroll-agent.socket"))
        // the earlier version's port is held too (applications not yet restarted still send their secrets
        // there), in a unit of its own: an address another process holds must never cost port 424
        #expect(socketText.split(separator: "\n").filter { $0.hasPrefix("ListenStream=") } == ["ListenStream=127.0.0.1:\(port)"], "keyroll-agent.socket listens on more than its port")
        let transitionText = try String(contentsOfFile: transition, encoding: .utf8)
        for line in ["\nListenStream=127.0.0.1:42356\n", "\nFileDescriptorName=token-endpoint-transition\n", "\nService=keyroll-agent.service\n"] {
            #expect(transitionText.contains(line), "keyroll-agent-transition.socket lacks \(line)")
        }
        #expect(text.contains("After=keyroll-agent.socket keyroll-agent-transition.socket") && !text.contains("Wants=keyroll-agent-transition.socket"),
                "the agent starts after the transition socket, without pulling it in")
        // stopping the socket never stops rolling, and without the socket the agent binds no port another user could hold
        #expect(!text.contains("Requires=keyroll-agent.socket") && text.contains("--token-endpoint-port -1"))
        #expect(text.contains("AmbientCapabilities=\n") && text.contains("PrivateUsers=yes"), "the agent needs no capability for the endpoint")
        let s = try await Tools.run([analyze, "security", "--offline=true", agent])
        let line = try #require(s.stdout.split(separator: "\n").last { $0.contains("Overall exposure level") }, "\(s.stdout) \(s.stderr)")
        let score = try #require(Double(line.split(separator: ":").last!.split(separator: " ").first { Double($0) != nil } ?? ""))
        print("systemd-analyze security keyroll-agent.service: \(line.trimmingCharacters(in: .whitespaces))")
        #expect(score <= 2.0, "exposure \(score): the sandbox lost ground")
    }

    /// `scripts/package` from the debug build (CI makes no release build): the .deb's layout and
    /// modes, its maintainer scripts, lintian, and `keyroll --version` run from a fresh root.
    @Test func thePackageInstallsIntoAFreshRootAndRuns() async throws {
        try Binaries.require()
        let dpkgDeb = try require("dpkg-deb", package: "dpkg")
        let out = try Tools.temporaryDirectory("keyroll-package")
        let built = try await Tools.run([Self.root + "/scripts/package", "--binary", Binaries.keyroll, "--out", out, "--compression", "gzip"])
        #expect(built.status == 0, "\(built.stderr.suffix(1500))")
        let version = try await Tools.run([Binaries.keyroll, "--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let deb = out + "/keyroll_\(version)_amd64.deb"
        let tarball = out + "/keyroll-\(version)-linux-x86_64.tar.gz"
        #expect(FileManager.default.fileExists(atPath: deb) && FileManager.default.fileExists(atPath: tarball), "\(built.stdout)")
        let info = try await Tools.run([dpkgDeb, "--info", deb])
        #expect(info.stdout.contains("Package: keyroll") && info.stdout.contains("Version: \(version)") && info.stdout.contains("postinst"), "\(info.stdout)")
        let contents = try await Tools.run([dpkgDeb, "--contents", deb]).stdout
        for entry in ["-rwxr-xr-x root/root", "./usr/bin/keyroll", "./usr/libexec/keyroll/keyroll-supervisor", "./lib/systemd/system/keyroll-agent.service", "./lib/systemd/system/keyroll-agent.socket", "./lib/systemd/system/keyroll-agent-transition.socket", "./etc/keyroll/agent.env",
                      "./usr/share/doc/keyroll/operations.md", "./usr/share/doc/keyroll/examples/prometheus/keyroll.rules.yml",
                      "./usr/share/doc/keyroll/examples/grafana/keyroll.json", "./usr/share/doc/keyroll/copyright",
                      "./usr/share/man/man1/keyroll.1.gz"] {
            #expect(contents.contains(entry), "the .deb lacks \(entry)")
        }
        let control = try Tools.temporaryDirectory("keyroll-control")
        _ = try await Tools.run([dpkgDeb, "--control", deb, control])
        #expect(try String(contentsOfFile: control + "/conffiles", encoding: .utf8).contains("/etc/keyroll/agent.env"))
        let postinst = try String(contentsOfFile: control + "/postinst", encoding: .utf8)
        #expect(postinst.contains("install -d -m 0700 -o keyroll -g keyroll /var/lib/keyroll") && postinst.contains("adduser --system"))
        #expect(postinst.contains("deb-systemd-helper enable keyroll-agent.socket"), "the package binds the token endpoint's socket at install")
        // from 0.2: the old agent (holding 42356 itself) is stopped before the transition socket starts
        let stop = try #require(postinst.range(of: "deb-systemd-invoke stop keyroll-agent.service"), "postinst never stops the 0.2 agent")
        let start = try #require(postinst.range(of: "deb-systemd-invoke start keyroll-agent-transition.socket"), "postinst never starts the transition socket")
        #expect(stop.upperBound < start.lowerBound, "the transition socket starts before the 0.2 agent that holds its port stops")
        #expect(!(try String(contentsOfFile: control + "/postrm", encoding: .utf8)).contains("rm -"), "purging must never delete the stores")
        // install into a fresh folder root and run it from there
        let root = try Tools.temporaryDirectory("keyroll-root")
        let x = try await Tools.run([dpkgDeb, "-x", deb, root])
        #expect(x.status == 0, "\(x.stderr)")
        let run = try await Tools.run([root + "/usr/bin/keyroll", "--version"])
        #expect(run.status == 0 && run.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == version, "\(run.stdout) \(run.stderr)")
        let help = try await Tools.run([root + "/usr/bin/keyroll", "retire", "--help"])
        #expect(help.stdout.contains("Scale in"), "the packaged binary is this build")
        // the tarball holds the same binary and unit
        let list = try await Tools.run(["tar", "-tzf", tarball]).stdout
        for entry in ["keyroll-\(version)/bin/keyroll", "keyroll-\(version)/libexec/keyroll/keyroll-supervisor", "keyroll-\(version)/systemd/keyroll-agent.service", "keyroll-\(version)/systemd/keyroll-agent.socket", "keyroll-\(version)/systemd/keyroll-agent-transition.socket", "keyroll-\(version)/share/operations.md", "keyroll-\(version)/man/man1/keyroll.1"] {
            #expect(list.contains(entry), "the tarball lacks \(entry)")
        }
        // lintian, when installed: no errors beyond the documented ones
        if let lintian = try? require("lintian", package: "lintian") {
            let l = try await Tools.run([lintian, "--no-tag-display-limit", deb])
            let errors = l.stdout.split(separator: "\n").filter { $0.hasPrefix("E:") }.filter { line in !Self.acceptedLintianErrors.contains { line.contains($0) } }
            #expect(errors.isEmpty, "lintian: \(errors)")
            // no warning at all: the manual page is there, and the maintainer scripts go through
            // deb-systemd-helper/-invoke (found on the PATH), as debhelper's do
            let warnings = l.stdout.split(separator: "\n").filter { $0.hasPrefix("W:") }
            #expect(warnings.isEmpty, "lintian: \(warnings)")
            #expect(!l.stdout.contains("maintainer-script-calls-systemctl") && !l.stdout.contains("no-manual-page"), "\(l.stdout)")
            print("lintian: \(l.stdout.split(separator: "\n").count) tags, \(errors.count) unexpected errors")
        }
    }

    /// Lintian errors that come from how Swift programs are built, not from how the package is made:
    /// SwiftPM links its dependencies' C code into the binary (Yams vendors libyaml; zlib comes in
    /// with the static Swift runtime), and the debug build the test packages (CI makes no release
    /// build) finds the Swift runtime through a RUNPATH, which the release build's static runtime
    /// does not need.
    static let acceptedLintianErrors = ["embedded-library libyaml", "embedded-library zlib", "custom-library-search-path RUNPATH /opt/swift"]
}
