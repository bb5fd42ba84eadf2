import ArgumentParser

/// `keyroll idle-baseline`: the binary started and asleep, doing nothing else. Hidden: it exists so that
/// `keyroll-lab bench footprint` can measure an idle agent against the same binary asleep (the pages
/// every run of this binary costs before it does any work).
struct IdleBaselineCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle-baseline",
        abstract: "Sleep without doing anything (the footprint benchmark's bound).",
        shouldDisplay: false
    )

    @Option(help: "Seconds to sleep.") var seconds: Int = 30

    func run() async throws {
        try await Task.sleep(for: .seconds(max(0, min(seconds, 3600))))
    }
}
