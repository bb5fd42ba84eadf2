import CPKCS11

/// A PKCS#11 return value other than `CKR_OK`, with the function that returned it.
public struct PKCS11Error: Error, Equatable, Sendable, CustomStringConvertible {
    public let rv: CK_RV
    public let function: String

    public init(_ rv: CK_RV, _ function: String) {
        self.rv = rv
        self.function = function
    }

    public static let cancel: CK_RV = 0x01
    public static let hostMemory: CK_RV = 0x02
    public static let slotIDInvalid: CK_RV = 0x03
    public static let generalError: CK_RV = 0x05
    public static let functionFailed: CK_RV = 0x06
    public static let argumentsBad: CK_RV = 0x07
    public static let attributeReadOnly: CK_RV = 0x10
    public static let attributeSensitive: CK_RV = 0x11
    public static let attributeTypeInvalid: CK_RV = 0x12
    public static let attributeValueInvalid: CK_RV = 0x13
    public static let deviceError: CK_RV = 0x30
    public static let deviceMemory: CK_RV = 0x31
    public static let deviceRemoved: CK_RV = 0x32
    public static let functionCanceled: CK_RV = 0x50
    public static let keyHandleInvalid: CK_RV = 0x60
    public static let keySizeRange: CK_RV = 0x62
    public static let mechanismInvalid: CK_RV = 0x70
    public static let mechanismParamInvalid: CK_RV = 0x71
    public static let objectHandleInvalid: CK_RV = 0x82
    public static let operationActive: CK_RV = 0x90
    public static let operationNotInitialized: CK_RV = 0x91
    public static let pinIncorrect: CK_RV = 0xA0
    public static let pinExpired: CK_RV = 0xA3
    public static let pinLocked: CK_RV = 0xA4
    public static let sessionClosed: CK_RV = 0xB0
    public static let sessionCount: CK_RV = 0xB1
    public static let sessionHandleInvalid: CK_RV = 0xB3
    public static let sessionReadOnly: CK_RV = 0xB5
    public static let templateIncomplete: CK_RV = 0xD0
    public static let templateInconsistent: CK_RV = 0xD1
    public static let tokenNotPresent: CK_RV = 0xE0
    public static let tokenNotRecognized: CK_RV = 0xE1
    public static let tokenWriteProtected: CK_RV = 0xE2
    public static let userAlreadyLoggedIn: CK_RV = 0x100
    public static let userNotLoggedIn: CK_RV = 0x101
    public static let userPINNotInitialized: CK_RV = 0x102
    public static let bufferTooSmall: CK_RV = 0x150
    public static let cryptokiNotInitialized: CK_RV = 0x190
    public static let cryptokiAlreadyInitialized: CK_RV = 0x191

    static let names: [CK_RV: String] = [
        cancel: "CKR_CANCEL", hostMemory: "CKR_HOST_MEMORY", slotIDInvalid: "CKR_SLOT_ID_INVALID", generalError: "CKR_GENERAL_ERROR",
        functionFailed: "CKR_FUNCTION_FAILED", argumentsBad: "CKR_ARGUMENTS_BAD", attributeReadOnly: "CKR_ATTRIBUTE_READ_ONLY",
        attributeSensitive: "CKR_ATTRIBUTE_SENSITIVE", attributeTypeInvalid: "CKR_ATTRIBUTE_TYPE_INVALID",
        attributeValueInvalid: "CKR_ATTRIBUTE_VALUE_INVALID", deviceError: "CKR_DEVICE_ERROR", deviceMemory: "CKR_DEVICE_MEMORY",
        deviceRemoved: "CKR_DEVICE_REMOVED", functionCanceled: "CKR_FUNCTION_CANCELED", keyHandleInvalid: "CKR_KEY_HANDLE_INVALID",
        keySizeRange: "CKR_KEY_SIZE_RANGE", mechanismInvalid: "CKR_MECHANISM_INVALID", mechanismParamInvalid: "CKR_MECHANISM_PARAM_INVALID",
        objectHandleInvalid: "CKR_OBJECT_HANDLE_INVALID", operationActive: "CKR_OPERATION_ACTIVE",
        operationNotInitialized: "CKR_OPERATION_NOT_INITIALIZED", pinIncorrect: "CKR_PIN_INCORRECT", pinExpired: "CKR_PIN_EXPIRED",
        pinLocked: "CKR_PIN_LOCKED", sessionClosed: "CKR_SESSION_CLOSED", sessionCount: "CKR_SESSION_COUNT",
        sessionHandleInvalid: "CKR_SESSION_HANDLE_INVALID", sessionReadOnly: "CKR_SESSION_READ_ONLY",
        templateIncomplete: "CKR_TEMPLATE_INCOMPLETE", templateInconsistent: "CKR_TEMPLATE_INCONSISTENT",
        tokenNotPresent: "CKR_TOKEN_NOT_PRESENT", tokenNotRecognized: "CKR_TOKEN_NOT_RECOGNIZED",
        tokenWriteProtected: "CKR_TOKEN_WRITE_PROTECTED", userAlreadyLoggedIn: "CKR_USER_ALREADY_LOGGED_IN",
        userNotLoggedIn: "CKR_USER_NOT_LOGGED_IN", userPINNotInitialized: "CKR_USER_PIN_NOT_INITIALIZED",
        bufferTooSmall: "CKR_BUFFER_TOO_SMALL", cryptokiNotInitialized: "CKR_CRYPTOKI_NOT_INITIALIZED",
        cryptokiAlreadyInitialized: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
    ]

    /// `CKR_…` name, or the hex value for one this table does not know.
    public var name: String { Self.names[rv] ?? "CKR_0x" + String(rv, radix: 16, uppercase: true) }

    /// The session or the token went away (a token pulled out, a daemon restarted, a handle
    /// invalidated): a new session may succeed where this one failed.
    public var sessionLost: Bool {
        [Self.sessionHandleInvalid, Self.sessionClosed, Self.tokenNotPresent, Self.deviceRemoved, Self.userNotLoggedIn,
         Self.cryptokiNotInitialized, Self.tokenNotRecognized].contains(rv)
    }

    /// The token is full: no room for another object.
    public var tokenFull: Bool { rv == Self.deviceMemory || rv == Self.hostMemory }

    public var description: String {
        let advice: String
        switch rv {
        case Self.pinIncorrect: advice = "the PIN is wrong: check the file named by pin-source (or KEYROLL_PKCS11_PIN)"
        case Self.pinLocked: advice = "the user PIN is locked after too many wrong tries: the token's security officer must unlock it"
        case Self.deviceMemory: advice = "the token is full: remove objects nobody uses (pkcs11-tool --list-objects), or use a larger token"
        case Self.tokenNotPresent, Self.deviceRemoved: advice = "the token is not present: check that it is plugged in (or its daemon is running)"
        case Self.mechanismInvalid: advice = "the token does not support this mechanism (pkcs11-tool -M lists what it supports)"
        case Self.userPINNotInitialized: advice = "the token has no user PIN yet: initialise it (softhsm2-util --init-token, or pkcs11-tool --init-pin)"
        default: advice = "the token refused the call"
        }
        return "\(function) failed with \(name): \(advice)"
    }
}
