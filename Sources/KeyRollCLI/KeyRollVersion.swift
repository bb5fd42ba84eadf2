/// The version both tools print (`--version`).
public enum KeyRollVersion {
    public static let current = "0.3.0"
}
