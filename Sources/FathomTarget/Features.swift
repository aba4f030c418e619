import CNVMeTypes
import NVMeWire

/// Set Features / Get Features. Every feature a host may touch either works or is refused
/// with Invalid Field: none is silently ignored.
extension Controller {
    private static func fid(_ f: nvme_features_id) -> UInt8 { UInt8(f.rawValue) }

    /// Features that Set Features may change on this kind of controller.
    private var changeableFeatures: Set<UInt8> {
        if isDiscovery { return [Self.fid(NVME_FEAT_FID_ASYNC_EVENT), Self.fid(NVME_FEAT_FID_KATO)] }
        return [Self.fid(NVME_FEAT_FID_POWER_MGMT), Self.fid(NVME_FEAT_FID_TEMP_THRESH), Self.fid(NVME_FEAT_FID_ERR_RECOVERY),
                Self.fid(NVME_FEAT_FID_VOLATILE_WC), Self.fid(NVME_FEAT_FID_NUM_QUEUES), Self.fid(NVME_FEAT_FID_WRITE_ATOMIC),
                Self.fid(NVME_FEAT_FID_ASYNC_EVENT), Self.fid(NVME_FEAT_FID_TIMESTAMP), Self.fid(NVME_FEAT_FID_KATO),
                Self.fid(NVME_FEAT_FID_HOST_BEHAVIOR), Self.fid(NVME_FEAT_FID_WRITE_PROTECT),
                Self.fid(NVME_FEAT_FID_RESV_MASK), Self.fid(NVME_FEAT_FID_RESV_PERSIST)]
    }

    private var readableFeatures: Set<UInt8> {
        var set = changeableFeatures
        if !isDiscovery {
            set.insert(Self.fid(NVME_FEAT_FID_ARBITRATION))
            set.insert(Self.fid(NVME_FEAT_FID_HOST_ID))
        }
        return set
    }

    /// Feature Identifiers Supported and Effects log (LID 12h): FSUPP, plus the scope
    /// (namespace for Write Protect, controller for the rest).
    var featureEffects: [UInt8] {
        var out = [UInt8](repeating: 0, count: 1024)
        out.withUnsafeMutableBytes { b in
            for fid in readableFeatures {
                let nsScoped: Set<UInt8> = [Self.fid(NVME_FEAT_FID_WRITE_PROTECT), Self.fid(NVME_FEAT_FID_RESV_MASK),
                                            Self.fid(NVME_FEAT_FID_RESV_PERSIST)]
                let scope: UInt32 = nsScoped.contains(fid) ? 1 << 20 : 1 << 21
                b.baseAddress!.put32(1 | scope, Int(fid) * 4)
            }
        }
        return out
    }

    /// Set Features. Reservation Persistence on a namespace with a state file saves that
    /// file (write, sync, rename) before it completes, so it completes elsewhere: a slow
    /// disk must not stall the reactor's other hosts. Every other feature completes here.
    func setFeature(_ sqe: SubmissionQueueEntry, data: UnsafeMutableRawBufferPointer, target: Target) -> AdminOutcome {
        if UInt8(truncatingIfNeeded: sqe.cdw10) == Self.fid(NVME_FEAT_FID_RESV_PERSIST), setFeatureRefusal(sqe) == nil,
           let ns = namespace(sqe.nsid), ns.reservations.persistencePath != nil {
            let state = ns.reservations, on = sqe.cdw11 & 1 != 0
            return .completeElsewhere(key: ObjectIdentifier(state)) {
                let (status, _) = state.update { s in
                    s.persistThroughPowerLoss = on
                    return (.success, [])
                }
                return CommandCompletion(status: status)
            }
        }
        return .complete(setFeatureHere(sqe, data: data, target: target))
    }

    /// Why Set Features of this feature is refused whatever its value, or nil.
    private func setFeatureRefusal(_ sqe: SubmissionQueueEntry) -> CommandCompletion? {
        let fid = UInt8(truncatingIfNeeded: sqe.cdw10)
        if fid == Self.fid(NVME_FEAT_FID_HOST_ID) && !isDiscovery {
            // On fabrics the host identifier comes from Connect and cannot change.
            return .failure(.commandSequenceError)
        }
        guard changeableFeatures.contains(fid) else { return .failure(.invalidField) }
        guard sqe.cdw10 & (1 << 31) == 0 else { return .failure(.featureNotSaveable) }
        return nil
    }

    private func setFeatureHere(_ sqe: SubmissionQueueEntry, data: UnsafeMutableRawBufferPointer, target: Target) -> CommandCompletion {
        if let refusal = setFeatureRefusal(sqe) { return refusal }
        let fid = UInt8(truncatingIfNeeded: sqe.cdw10)
        let value = sqe.cdw11
        switch fid {
        case Self.fid(NVME_FEAT_FID_NUM_QUEUES):
            // NSQR/NCQR are 0-based; 0xFFFF is invalid. Grant up to our limit, equal counts.
            let nsqr = Int(value & 0xFFFF), ncqr = Int(value >> 16)
            guard nsqr != 0xFFFF, ncqr != 0xFFFF else { return .failure(.invalidField) }
            let granted = min(max(nsqr, ncqr) + 1, maxIOQueues)
            grantedIOQueues.store(granted, ordering: .relaxed)
            let g = UInt32(granted - 1)
            return CommandCompletion(status: .success, dw0: g | g << 16)
        case Self.fid(NVME_FEAT_FID_KATO):
            setKeepAlive(value == 0 && isDiscovery ? settings.discoveryDefaultKeepAliveMs : value)
        case Self.fid(NVME_FEAT_FID_ASYNC_EVENT):
            asyncEventConfiguration = value
        case Self.fid(NVME_FEAT_FID_VOLATILE_WC):
            volatileWriteCacheEnabled = value & 1 != 0
        case Self.fid(NVME_FEAT_FID_POWER_MGMT):
            guard value & 0x1F == 0 else { return .failure(.invalidField) }  // one power state
        case Self.fid(NVME_FEAT_FID_TEMP_THRESH):
            temperatureThreshold = value
        case Self.fid(NVME_FEAT_FID_ERR_RECOVERY):
            errorRecovery = value
        case Self.fid(NVME_FEAT_FID_WRITE_ATOMIC):
            writeAtomicity = value & 1
        case Self.fid(NVME_FEAT_FID_TIMESTAMP):
            guard data.count >= 8, let p = data.baseAddress else { return .failure(.dataSGLLengthInvalid) }
            timestamp = UnsafeRawPointer(p).le64(0) & 0xFFFF_FFFF_FFFF
            timestampSetAtMs = MonotonicClock.nowMs()
        case Self.fid(NVME_FEAT_FID_HOST_BEHAVIOR):
            guard data.count >= 512, let p = data.baseAddress else { return .failure(.dataSGLLengthInvalid) }
            hostBehavior = Array(UnsafeRawBufferPointer(start: p, count: 512))
        case Self.fid(NVME_FEAT_FID_RESV_MASK):
            // Bits 1..3 mask registration preempted, reservation released, reservation preempted.
            guard sqe.nsid == 0xFFFF_FFFF || namespace(sqe.nsid) != nil else { return .failure(.invalidNamespace) }
            if sqe.nsid == 0xFFFF_FFFF { reservationMasks.removeAll() }
            reservationMasks[sqe.nsid] = value & 0xE
        case Self.fid(NVME_FEAT_FID_RESV_PERSIST):
            guard let ns = namespace(sqe.nsid) else { return .failure(.invalidNamespace) }
            guard ns.reservations.persistencePath != nil || value & 1 == 0 else { return .failure(.invalidField) }
            let (status, _) = ns.reservations.update { s in
                s.persistThroughPowerLoss = value & 1 != 0
                return (.success, [])
            }
            return CommandCompletion(status: status)
        case Self.fid(NVME_FEAT_FID_WRITE_PROTECT):
            // States 0 (no write protect) and 1 (write protect); the until-power-cycle and
            // permanent states are not offered (NWPC bit 0 only).
            guard let ns = namespace(sqe.nsid) else { return .failure(.invalidNamespace) }
            guard value & 0x7 <= 1 else { return .failure(.invalidField) }
            guard !ns.readOnly else { return .failure(.featureNotChangeable) }
            let on = value & 0x7 == 1
            if ns.isWriteProtected != on {
                ns.setHostWriteProtect(on)
                target.namespacesChanged(in: subsystem, [ns.nsid])
            }
        default:
            return .failure(.invalidField)
        }
        return .success
    }

    func getFeature(_ sqe: SubmissionQueueEntry, data: UnsafeMutableRawBufferPointer) -> CommandCompletion {
        let fid = UInt8(truncatingIfNeeded: sqe.cdw10)
        let select = (sqe.cdw10 >> 8) & 0x7
        guard readableFeatures.contains(fid) else { return .failure(.invalidField) }
        switch select {
        case 0, 1, 2: break  // current, default, saved (nothing is saveable: saved = current)
        case 3:
            // Supported capabilities: bit 2 = changeable.
            return CommandCompletion(status: .success, dw0: changeableFeatures.contains(fid) ? 0x4 : 0)
        default:
            return .failure(.invalidField)
        }
        let useDefault = select == 1
        switch fid {
        case Self.fid(NVME_FEAT_FID_NUM_QUEUES):
            let g = UInt32(max((useDefault ? maxIOQueues : grantedIOQueues.load(ordering: .relaxed)), 1) - 1)
            return CommandCompletion(status: .success, dw0: g | g << 16)
        case Self.fid(NVME_FEAT_FID_KATO):
            return CommandCompletion(status: .success, dw0: keepAliveTimeoutMs)
        case Self.fid(NVME_FEAT_FID_ASYNC_EVENT):
            return CommandCompletion(status: .success, dw0: useDefault ? 0 : asyncEventConfiguration)
        case Self.fid(NVME_FEAT_FID_VOLATILE_WC):
            return CommandCompletion(status: .success, dw0: useDefault || volatileWriteCacheEnabled ? 1 : 0)
        case Self.fid(NVME_FEAT_FID_TEMP_THRESH):
            return CommandCompletion(status: .success, dw0: useDefault ? 0x0157 : temperatureThreshold)
        case Self.fid(NVME_FEAT_FID_ERR_RECOVERY):
            return CommandCompletion(status: .success, dw0: useDefault ? 0 : errorRecovery)
        case Self.fid(NVME_FEAT_FID_WRITE_ATOMIC):
            return CommandCompletion(status: .success, dw0: useDefault ? 0 : writeAtomicity)
        case Self.fid(NVME_FEAT_FID_POWER_MGMT), Self.fid(NVME_FEAT_FID_ARBITRATION):
            return CommandCompletion(status: .success, dw0: 0)
        case Self.fid(NVME_FEAT_FID_TIMESTAMP):
            guard data.count >= 8, let p = data.baseAddress else { return .failure(.dataSGLLengthInvalid) }
            let now = MonotonicClock.nowMs()
            let value = timestampSetAtMs == 0 ? UInt64(0) : (timestamp + UInt64(now - timestampSetAtMs)) & 0xFFFF_FFFF_FFFF
            p.put64(value | (timestampSetAtMs == 0 ? 0 : UInt64(1) << 49), 0)  // bits 51:49 = 001b: set by Set Features
            return CommandCompletion(status: .success, dataLength: 8)
        case Self.fid(NVME_FEAT_FID_HOST_BEHAVIOR):
            guard data.count >= 512 else { return .failure(.dataSGLLengthInvalid) }
            return respond(useDefault ? [] : hostBehavior, into: UnsafeMutableRawBufferPointer(rebasing: data[0..<512]))
        case Self.fid(NVME_FEAT_FID_WRITE_PROTECT):
            guard let ns = namespace(sqe.nsid) else { return .failure(.invalidNamespace) }
            return CommandCompletion(status: .success, dw0: !useDefault && ns.isWriteProtected ? 1 : 0)
        case Self.fid(NVME_FEAT_FID_RESV_MASK):
            guard sqe.nsid == 0xFFFF_FFFF || namespace(sqe.nsid) != nil else { return .failure(.invalidNamespace) }
            return CommandCompletion(status: .success, dw0: useDefault ? 0 : reservationMasks[sqe.nsid] ?? reservationMasks[0xFFFF_FFFF] ?? 0)
        case Self.fid(NVME_FEAT_FID_RESV_PERSIST):
            guard let ns = namespace(sqe.nsid) else { return .failure(.invalidNamespace) }
            return CommandCompletion(status: .success, dw0: !useDefault && ns.reservations.state.withLock { $0.persistThroughPowerLoss } ? 1 : 0)
        case Self.fid(NVME_FEAT_FID_HOST_ID):
            // EXHID (CDW11 bit 0) must be set: the fabrics host identifier is 128 bits.
            guard sqe.cdw11 & 1 != 0 else { return .failure(.invalidField) }
            guard data.count >= 16 else { return .failure(.dataSGLLengthInvalid) }
            return respond(hostID, into: UnsafeMutableRawBufferPointer(rebasing: data[0..<16]))
        default:
            return .failure(.invalidField)
        }
    }
}
