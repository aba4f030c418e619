import FathomConfig
import XCTest

final class NvmetcliConfigTests: XCTestCase {
    /// The shape `nvmetcli save` writes (kernel attributes included, all as strings).
    let saved = """
    {
      "hosts": [{"nqn": "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555"}],
      "ports": [{"addr": {"adrfam": "ipv4", "traddr": "0.0.0.0", "treq": "not specified", "trsvcid": "4420", "trtype": "tcp", "tsas": "none"},
                 "ana_groups": [{"ana": {"state": "optimized"}, "grpid": 1}], "param": {"inline_data_size": "16384", "pi_enable": "0"},
                 "portid": 1, "referrals": [], "subsystems": ["nqn.2026-11.io.fathom:ds"]}],
      "subsystems": [{"allowed_hosts": ["nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555"],
                      "attr": {"allow_any_host": "0", "cntlid_max": "65519", "cntlid_min": "1", "firmware": "6.1", "ieee_oui": "0x000000",
                               "model": "Linux", "pi_enable": "0", "qid_max": "128", "serial": "a1b2c3d4e5f6", "version": "1.3"},
                      "namespaces": [{"ana_grpid": 1, "device": {"nguid": "00000000-0000-0000-0000-000000000000", "path": "/srv/ds.img",
                                                                 "uuid": "2a6cf8c4-3f1e-4b5e-9a0d-1f2e3d4c5b6a"}, "enable": 1, "nsid": 1},
                                     {"device": {"path": "/srv/off.img"}, "enable": 0, "nsid": 2}],
                      "nqn": "nqn.2026-11.io.fathom:ds"}]
    }
    """

    func testParsesNvmetcliSave() throws {
        let c = try TargetConfig.parse(json: Array(saved.utf8))
        XCTAssertEqual(c.listeners.count, 1)
        XCTAssertEqual(c.listeners[0].address, "0.0.0.0")
        XCTAssertEqual(c.listeners[0].port, 4420)
        XCTAssertEqual(c.listeners[0].portID, 1)
        XCTAssertEqual(c.subsystems[0].serial, "a1b2c3d4e5f6")
        XCTAssertEqual(c.subsystems[0].model, "Linux")
        XCTAssertFalse(c.subsystems[0].allowAnyHost)
        XCTAssertEqual(c.subsystems[0].allowedHosts.count, 1)
        XCTAssertEqual(c.subsystems[0].namespaces.map(\.nsid), [1], "disabled namespaces are not exported")
        XCTAssertEqual(c.subsystems[0].namespaces[0].uuid.first, 0x2a)
        XCTAssertEqual(c.subsystems[0].namespaces[0].path, "/srv/ds.img")
    }

    func testKernelAttributesAreHonoured() throws {
        let c = try TargetConfig.parse(json: Array(saved.utf8))
        XCTAssertEqual(c.listeners[0].inlineDataSize, 16384)
        XCTAssertEqual(c.subsystems[0].firmware, "6.1")
        XCTAssertEqual(c.subsystems[0].version, 0x0001_0300)
        XCTAssertEqual(c.subsystems[0].controllerIDs, 1...65519)
        XCTAssertEqual(c.subsystems[0].maxIOQueues, 128)
    }

    func testReferralsDiscoveryNQNAndPortParameters() throws {
        let json = """
        {"discovery_nqn": "nqn.2026-11.io.fathom:discovery-a",
         "ports": [{"addr": {"adrfam": "ipv6", "traddr": "::1", "trsvcid": "8009", "trtype": "tcp"}, "portid": 9,
                    "param": {"max_queue_size": "256", "inline_data_size": "8192"},
                    "referrals": [{"addr": {"adrfam": "ipv4", "portid": "4", "traddr": "192.0.2.7", "treq": "not specified", "trsvcid": "8009",
                                            "trtype": "tcp"}, "name": "rack2"}]}],
         "subsystems": [{"nqn": "nqn.2026-11.io.fathom:x", "attr": {"cntlid_min": "10", "cntlid_max": "20", "qid_max": "4", "version": "1.2", "max_controllers": "8"}}]}
        """
        let c = try TargetConfig.parse(json: Array(json.utf8))
        XCTAssertEqual(c.discoveryNQN, "nqn.2026-11.io.fathom:discovery-a")
        XCTAssertTrue(c.listeners[0].isIPv6)
        XCTAssertEqual(c.listeners[0].subsystems, [], "a port without subsystems serves discovery only")
        XCTAssertEqual(c.listeners[0].maxQueueSize, 256)
        XCTAssertEqual(c.listeners[0].inlineDataSize, 8192)
        XCTAssertEqual(c.listeners[0].referrals, [.init(name: "rack2", portID: 4, address: "192.0.2.7", port: 8009, isIPv6: false)])
        XCTAssertEqual(c.subsystems[0].controllerIDs, 10...20)
        XCTAssertEqual(c.subsystems[0].maxIOQueues, 4)
        XCTAssertEqual(c.subsystems[0].version, 0x0001_0200)
        XCTAssertEqual(c.subsystems[0].maxControllers, 8)
    }

    func testANAGroupsEUI64AndBufferedIO() throws {
        let json = """
        {"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "4420", "trtype": "tcp"}, "portid": 1, "subsystems": ["nqn.2026-11.io.fathom:x"],
                    "ana_groups": [{"grpid": 1, "ana": {"state": "optimized"}}, {"grpid": 2, "ana": {"state": "non-optimized"}}]},
                   {"addr": {"traddr": "127.0.0.2", "trsvcid": "4420", "trtype": "tcp"}, "portid": 2, "subsystems": ["nqn.2026-11.io.fathom:x"],
                    "ana_groups": [{"grpid": 2, "ana": {"state": "optimized"}}, {"grpid": 1, "ana": {"state": "inaccessible"}}]}],
         "subsystems": [{"nqn": "nqn.2026-11.io.fathom:x", "namespaces": [
            {"nsid": 1, "ana_grpid": 1, "buffered_io": "0", "device": {"path": "/a", "eui64": "00:25:38:b1:c2:d3:e4:f5"}},
            {"nsid": 2, "ana_grpid": "2", "device": {"path": "/b"}}]}]}
        """
        let c = try TargetConfig.parse(json: Array(json.utf8))
        XCTAssertEqual(c.listeners[0].anaGroups, [1: .optimized, 2: .nonOptimized])
        XCTAssertEqual(c.listeners[1].anaGroups, [1: .inaccessible, 2: .optimized])
        XCTAssertEqual(c.subsystems[0].namespaces.map(\.anaGroupID), [1, 2])
        XCTAssertEqual(c.subsystems[0].namespaces[0].eui64, [0x00, 0x25, 0x38, 0xb1, 0xc2, 0xd3, 0xe4, 0xf5])
        XCTAssertEqual(c.subsystems[0].namespaces[0].directIO, true, "buffered_io 0 means O_DIRECT, as nvmet")
        let undefined = json.replacingOccurrences(of: #""ana_grpid": "2""#, with: #""ana_grpid": "3""#)
        XCTAssertThrowsError(try TargetConfig.parse(json: Array(undefined.utf8))) { e in
            XCTAssertEqual((e as! ConfigError).key, "subsystems[0].namespaces[nsid 2].ana_grpid")
        }
    }

    func testBadAttributesAreAllReported() {
        let json = """
        {"discovery_nqn": "bogus",
         "ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "4420", "trtype": "tcp", "treq": "required"}, "portid": 1,
                    "param": {"max_queue_size": "4"}, "ana_groups": [{"grpid": 2, "ana": {"state": "inaccessible"}}]},
                   {"addr": {"traddr": "127.0.0.1", "trsvcid": "4421", "trtype": "tcp"}, "portid": 2,
                    "referrals": [{"name": "r", "addr": {"traddr": "nowhere", "trtype": "tcp"}}]}],
         "subsystems": [{"nqn": "nqn.2026-11.io.fathom:x", "attr": {"cntlid_min": "30", "cntlid_max": "20", "version": "2.0"}}]}
        """
        XCTAssertThrowsError(try TargetConfig.parse(json: Array(json.utf8))) { e in
            let all = ([e as! ConfigError] + (e as! ConfigError).others).map(\.key)
            XCTAssertEqual(Set(all), ["subsystems[0].attr.version", "ports[0].addr.treq", "ports[1].referrals[0].addr.traddr",
                                      "discovery_nqn"], "\(e)")
        }
        // Each of these alone (the first error per object stops that object's checks).
        for (attr, key) in [(#""cntlid_min": "30", "cntlid_max": "20""#, "subsystems[0].attr.cntlid_min"),
                            (#""qid_max": "0""#, "subsystems[0].attr.qid_max"), (#""pi_enable": "1""#, "subsystems[0].attr.pi_enable")] {
            let doc = """
            {"ports": [{"addr": {"traddr": "127.0.0.1", "trtype": "tcp"}, "portid": 1, "param": {"max_queue_size": "4"}}],
             "subsystems": [{"nqn": "nqn.2026-11.io.fathom:x", "attr": {\(attr)}}]}
            """
            XCTAssertThrowsError(try TargetConfig.parse(json: Array(doc.utf8))) { e in
                let keys = ([e as! ConfigError] + (e as! ConfigError).others).map(\.key)
                XCTAssertEqual(Set(keys), [key, "ports[0].param.max_queue_size"])
            }
        }
    }

    /// What `save` writes loads back to the same configuration.
    func testEncodedDocumentRoundTrips() throws {
        let raw = try NvmetcliConfig.decode(Array(saved.utf8))
        let again = try NvmetcliConfig.decode(raw.encoded())
        XCTAssertEqual(again, raw)
        XCTAssertEqual(try TargetConfig.validate(again), try TargetConfig.validate(raw))
        XCTAssertEqual(TargetConfig.demo(imagePath: "/tmp/x").subsystems[0].serial, "fathom-demo")
    }

    func testDefaultsAreStableAcrossLoads() throws {
        let json = """
        {"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": 4420, "trtype": "tcp"}, "portid": "2", "subsystems": ["nqn.2026-11.io.fathom:x"]}],
         "subsystems": [{"nqn": "nqn.2026-11.io.fathom:x", "namespaces": [{"nsid": "3", "device": {"path": "/tmp/x"}, "readonly": true}]}]}
        """
        let a = try TargetConfig.parse(json: Array(json.utf8))
        let b = try TargetConfig.parse(json: Array(json.utf8))
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.subsystems[0].namespaces[0].uuid.count, 16)
        XCTAssertNotEqual(a.subsystems[0].namespaces[0].uuid, a.subsystems[0].namespaces[0].nguid)
        XCTAssertTrue(a.subsystems[0].namespaces[0].readOnly)
        XCTAssertFalse(a.subsystems[0].allowAnyHost, "nvmet's default: no host unless allowed")
        XCTAssertEqual(a.subsystems[0].serial.count, 16)
    }

    func testErrorsNameKeyAndValue() {
        func error(_ json: String) -> ConfigError? {
            do {
                _ = try TargetConfig.parse(json: Array(json.utf8))
                return nil
            } catch { return error }
        }
        let port = #"{"addr": {"traddr": "127.0.0.1", "trsvcid": "4420", "trtype": "tcp"}, "portid": 1, "subsystems": ["nqn.2026-11.io.fathom:x"]}"#
        var e = error(#"{"ports": [\#(port)], "subsystems": [{"nqn": "nqn.2026-11.io.fathom:x", "namespaces": [{"nsid": 0, "device": {"path": "/x"}}]}]}"#)
        XCTAssertEqual(e?.key, "subsystems[0].namespaces[0].nsid")
        XCTAssertEqual(e?.value, "\"0\"")
        e = error(#"{"ports": [\#(port)], "subsystems": [{"nqn": "nqn.bad", "namespaces": []}]}"#)
        XCTAssertEqual(e?.key, "subsystems[0].nqn")
        XCTAssertEqual(e?.value, "\"nqn.bad\"")
        e = error(#"{"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "44x", "trtype": "tcp"}, "portid": 1}], "subsystems": []}"#)
        XCTAssertEqual(e?.key, "ports[0].addr.trsvcid")
        e = error(#"{"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "4420", "trtype": "rdma"}, "portid": 1}], "subsystems": []}"#)
        XCTAssertEqual(e?.key, "ports[0].addr.trtype")
        XCTAssertTrue(e?.description.contains("tcp") ?? false)
        e = error(#"{"ports": [{"addr": {"traddr": "300.1.1.1", "trsvcid": "4420", "trtype": "tcp"}, "portid": 1}], "subsystems": []}"#)
        XCTAssertEqual(e?.key, "ports[0].addr.traddr")
        e = error(#"{"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "4420", "trtype": "tcp"}, "portid": 1, "subsystems": ["nqn.2026-11.io.fathom:none"]}], "subsystems": []}"#)
        XCTAssertEqual(e?.key, "ports[0].subsystems[0]")
        e = error(#"{"ports": [\#(port)], "subsystems": [{"nqn": "nqn.2026-11.io.fathom:x", "namespaces": [{"nsid": 1, "device": {}}]}]}"#)
        XCTAssertEqual(e?.key, "subsystems[0].namespaces[0].device.path")
        XCTAssertEqual(e?.value, "(missing)")
        e = error(#"{"ports": [\#(port)], "subsystems": [{"nqn": "nqn.2026-11.io.fathom:x", "attr": {"allow_any_host": "maybe"}}]}"#)
        XCTAssertEqual(e?.key, "subsystems[0].attr.allow_any_host")
        e = error(#"{"ports": [\#(port)], "subsystems": [{"nqn": "nqn.2026-11.io.fathom:x", "namespaces": [{"nsid": 1, "device": {"path": "/x", "uuid": "zz"}}]}]}"#)
        XCTAssertEqual(e?.key, "subsystems[0].namespaces[0].device.uuid")
        e = error("{not json")
        XCTAssertNotNil(e)
        e = error(#"{"ports": [], "subsystems": []}"#)
        XCTAssertEqual(e?.key, "ports")
    }

    func testDemoConfig() {
        let c = TargetConfig.demo(imagePath: "/tmp/demo.img")
        XCTAssertEqual(c.listeners[0].address, "127.0.0.1")
        XCTAssertEqual(c.listeners[0].port, 4420)
        XCTAssertEqual(c.subsystems[0].nqn, TargetConfig.demoNQN)
        XCTAssertTrue(c.subsystems[0].allowAnyHost)
    }
}

final class ConfigIdentityTests: XCTestCase {
    func testDuplicateNamespaceIdentifiersAreRefused() {
        let json = #"""
        {"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "4420", "trtype": "tcp"}, "portid": 1}],
         "subsystems": [
           {"nqn": "nqn.2026-11.io.fathom:a", "namespaces": [{"nsid": 1, "device": {"path": "/a", "uuid": "2a6cf8c4-3f1e-4b5e-9a0d-1f2e3d4c5b6a"}}]},
           {"nqn": "nqn.2026-11.io.fathom:b", "namespaces": [{"nsid": 1, "device": {"path": "/a", "uuid": "2a6cf8c4-3f1e-4b5e-9a0d-1f2e3d4c5b6a"}}]}]}
        """#
        XCTAssertThrowsError(try TargetConfig.parse(json: Array(json.utf8))) {
            let e = $0 as? ConfigError
            XCTAssertEqual(e?.key, "subsystems[1].namespaces[0].device.uuid")
            XCTAssertTrue(e?.problem.contains("subsystems[0].namespaces[0].device.uuid") ?? false)
        }
    }

    func testMemoryAndNullBackends() throws {
        let json = #"""
        {"ports": [{"addr": {"traddr": "::1", "adrfam": "ipv6", "trsvcid": "4420", "trtype": "tcp"}, "portid": 1}],
         "subsystems": [{"nqn": "nqn.2026-11.io.fathom:m", "namespaces": [
            {"nsid": 1, "device": {"backend": "memory", "size": "64M"}},
            {"nsid": 2, "device": {"backend": "null", "size": 1073741824, "block_size": 4096}}]}]}
        """#
        let c = try TargetConfig.parse(json: Array(json.utf8))
        XCTAssertEqual(c.subsystems[0].namespaces[0].backend, .memory)
        XCTAssertEqual(c.subsystems[0].namespaces[0].size, 64 << 20)
        XCTAssertEqual(c.subsystems[0].namespaces[1].backend, .null)
        XCTAssertEqual(c.subsystems[0].namespaces[1].blockSize, 4096)
        XCTAssertTrue(c.listeners[0].isIPv6)
        let bad = json.replacingOccurrences(of: #""size": "64M""#, with: #""size": "lots""#)
        XCTAssertThrowsError(try TargetConfig.parse(json: Array(bad.utf8))) {
            XCTAssertEqual(($0 as? ConfigError)?.key, "subsystems[0].namespaces[0].device.size")
        }
    }
}

final class ConfigAllErrorsTests: XCTestCase {
    func testEveryErrorIsReportedAtOnce() {
        let json = #"""
        {"ports": [{"addr": {"traddr": "999.0.0.1", "trsvcid": "4420", "trtype": "tcp"}, "portid": 1}],
         "subsystems": [
           {"nqn": "nqn.2026-11.io.fathom:a", "namespaces": [{"nsid": 0, "device": {"path": "/a"}}, {"nsid": 2, "device": {"path": ""}}]},
           {"nqn": "bad", "namespaces": []}]}
        """#
        XCTAssertThrowsError(try TargetConfig.parse(json: Array(json.utf8))) { error in
            guard let e = error as? ConfigError else { return XCTFail("\(error)") }
            let keys = [e.key] + e.others.map(\.key)
            XCTAssertEqual(keys, ["subsystems[0].namespaces[0].nsid", "subsystems[0].namespaces[1].device.path",
                                  "subsystems[1].nqn", "ports[0].addr.traddr"])
            XCTAssertEqual(e.description.split(separator: "\n").count, 4)
        }
    }
}
