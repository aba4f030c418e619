/// The zero-configuration demo: one sparse image exported on loopback.
extension TargetConfig {
    public static let demoNQN = "nqn.2026-11.io.fathom:demo"

    /// The demo as an nvmetcli document (what `fathomctl save` writes for it).
    public static func demoDocument(imagePath: String, address: String = "127.0.0.1", port: UInt16 = 4420) -> NvmetcliConfig {
        let v6 = address.contains(":")
        return NvmetcliConfig(
            ports: [.init(addr: .init(adrfam: v6 ? "ipv6" : "ipv4", traddr: address, trsvcid: FlexibleValue(String(port))),
                          portid: FlexibleValue("1"), subsystems: [demoNQN])],
            subsystems: [.init(nqn: demoNQN,
                               attr: ["allow_any_host": FlexibleValue("1"), "serial": FlexibleValue("fathom-demo"),
                                      "model": FlexibleValue("Fathom demo")],
                               allowed_hosts: [],
                               namespaces: [.init(nsid: FlexibleValue("1"), enable: FlexibleValue("1"), device: .init(path: imagePath))])])
    }

    public static func demo(imagePath: String, address: String = "127.0.0.1", port: UInt16 = 4420) -> TargetConfig {
        // The document above is valid by construction; the test suite checks it.
        try! validate(demoDocument(imagePath: imagePath, address: address, port: port))
    }
}
