import ArgumentParser
import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import LabHarness
import Logging
import Provisioning
import ServiceLifecycle

extension BenchCommand {
    struct Peers: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "peers", abstract: "The same bootstrap + roll by keyroll, a hand-written MSAL Python script, and Azure CLI's privileged path, side by side.")
        @Option(help: "Repetitions per peer.") var reps = 3
        @Option(help: "Python with msal, cryptography, requests, PyJWT.") var python = ProcessInfo.processInfo.environment["KEYROLL_PYTHON"] ?? ".venv-py/bin/python"
        @Option(help: "The Azure CLI (az) to compare, e.g. .venv-azcli/bin/az.") var az: String?
        @Option(help: "The MSAL peer script.") var script = "Benchmarks/peers/msal_roll.py"
        @Flag var json = false

        func run() async throws {
            BenchCommand.quietLogs()
            let me = try BenchCommand.keyrollPath()
            try await BenchEmulator.serving { emu in
                let env = ["KEYROLL_CA_FILE": emu.dir + "/ca.pem", "KEYROLL_LOG_FORMAT": "json"]
                var keyroll: [Measured] = [], py: [Measured] = [], azRuns: [Measured] = []
                for i in 0..<reps {
                    let b1 = try await emu.bundle("peer-keyroll-\(i)")
                    let store = "\(emu.dir)/kr-\(i)"
                    try Roller.importBundle(try BootstrapBundle.decode(try SecureFiles.read(b1)), into: CredentialStore(path: store), now: Date())
                    let m = try await Measured.run([me, "roll", "--store", store], env: env)
                    guard m.status == 0 else { throw UserFacingError("keyroll roll failed") }
                    keyroll.append(m)
                    let b2 = try await emu.bundle("peer-python-\(i)")
                    let mp = try await Measured.run([python, script, b2, emu.dir + "/ca.pem", "\(emu.dir)/py-\(i)"])
                    guard mp.status == 0 else { throw UserFacingError("the MSAL peer script failed (\(mp.status)); run it by hand to see why") }
                    py.append(mp)
                }
                func report(_ name: String, _ ms: [Measured], _ cmd: String) {
                    let kw = BenchCommand.median(keyroll.map(\.wall)), kc = BenchCommand.median(keyroll.map(\.cpu))
                    Figure(name: "\(name): wall per operation", value: BenchCommand.median(ms.map(\.wall)), unit: "s", bound: kw, boundName: "keyroll roll", command: cmd).print(json: json)
                    Figure(name: "\(name): CPU per operation", value: BenchCommand.median(ms.map(\.cpu)), unit: "CPU-s", bound: kc, boundName: "keyroll roll", command: cmd).print(json: json)
                }
                report("keyroll roll (bootstrap + roll)", keyroll, "keyroll-lab bench peers")
                report("MSAL Python script (bootstrap + roll)", py, "keyroll-lab bench peers --python \(python)")
                if let az {
                    let cfg = emu.dir + "/azcfg"
                    try FileManager.default.createDirectory(atPath: cfg, withIntermediateDirectories: true)
                    let combined = emu.dir + "/combined-ca.pem"
                    let system = (try? String(contentsOfFile: "/etc/ssl/certs/ca-certificates.crt", encoding: .utf8)) ?? ""
                    try (system + (try String(contentsOfFile: emu.dir + "/ca.pem", encoding: .utf8))).write(toFile: combined, atomically: true, encoding: .utf8)
                    let azEnv = ["AZURE_CONFIG_DIR": cfg, "REQUESTS_CA_BUNDLE": combined, "CURL_CA_BUNDLE": combined, "AZURE_CORE_INSTANCE_DISCOVERY": "false",
                                 "AZURE_CORE_COLLECT_TELEMETRY": "false", "AZURE_CORE_USE_MSAL_HTTP_CACHE": "false", "AZURE_CORE_ONLY_SHOW_ERRORS": "true"]
                    let b = emu.base
                    for argv in [[az, "cloud", "register", "-n", "KeyRollEmu", "--endpoint-active-directory", b, "--endpoint-active-directory-resource-id", b + "/",
                                  "--endpoint-resource-manager", b + "/", "--endpoint-microsoft-graph-resource-id", b + "/", "--skip-endpoint-discovery"],
                                 [az, "cloud", "set", "-n", "KeyRollEmu"],
                                 [az, "login", "--service-principal", "-u", emu.registration.appId, "--certificate", emu.dir + "/provisioner.pem",
                                  "--tenant", emu.registration.tenantID, "--allow-no-subscriptions"]] {
                        let r = try await Measured.run(argv, env: azEnv)
                        guard r.status == 0 else { throw UserFacingError("\(argv[1...2].joined(separator: " ")) failed with status \(r.status)") }
                    }
                    for i in 0..<reps {
                        let r = try await emu.provisioner.provision(name: "peer-az-\(i)")
                        let m = try await Measured.run([az, "ad", "app", "credential", "reset", "--id", r.application.appId, "--append", "--create-cert"], env: azEnv)
                        guard m.status == 0 else { throw UserFacingError("az ad app credential reset failed (\(m.status))") }
                        let keys = try emu.emulator.keyCredentials(appId: r.application.appId)
                        guard keys.count == 2 else { throw UserFacingError("az ad app credential reset left \(keys.count) keys on the app, expected the bootstrap key and a new one") }
                        azRuns.append(m)
                    }
                    report("Azure CLI `az ad app credential reset --append --create-cert` (privileged add only)", azRuns, "keyroll-lab bench peers --az \(az)")
                }
            }
        }
    }
}
