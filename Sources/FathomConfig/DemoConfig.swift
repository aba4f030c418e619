/// The zero-configuration demo: one sparse image exported on loopback.
extension TargetConfig {
    public static let demoNQN = "nqn.2026-11.io.fathom:demo"

    public static func demo(imagePath: String, address: String = "127.0.0.1", port: UInt16 = 4420) -> TargetConfig {
        TargetConfig(
            listeners: [Listener(portID: 1, address: address, port: port, isIPv6: address.contains(":"), subsystems: [demoNQN])],
            subsystems: [SubsystemSpec(
                nqn: demoNQN, serial: "fathom-demo", model: "Fathom demo", allowAnyHost: true, allowedHosts: [],
                namespaces: [NamespaceSpec(nsid: 1, path: imagePath,
                                           uuid: StableID.derive("uuid", demoNQN, 1, uuidVersion: true),
                                           nguid: StableID.derive("nguid", demoNQN, 1, uuidVersion: false),
                                           readOnly: false, directIO: nil, blockSize: 512)])])
    }
}
