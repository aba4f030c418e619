import FoundationEssentials

/// fathomctl's side of the control socket: one request, one response per connection.
public enum ControlClient {
    public static func send(_ request: ControlRequest, socketPath: String, timeoutSeconds: Int = 60) throws(ControlError) -> ControlResponse {
        let socket = try UnixSocket.connect(path: socketPath)
        socket.setTimeout(seconds: timeoutSeconds)
        let body: [UInt8]
        do {
            body = try [UInt8](JSONEncoder().encode(request)) + [0x0A]
        } catch {
            throw ControlError("cannot encode the request: \(error)")
        }
        guard socket.writeAll(body) else { throw ControlError("the daemon closed the control connection") }
        guard let line = socket.readLine(limit: 64 << 20) else {
            throw ControlError("no answer from the daemon within \(timeoutSeconds) s")
        }
        do {
            return try JSONDecoder().decode(ControlResponse.self, from: Data(line))
        } catch {
            throw ControlError("the daemon's answer is not valid: \(error)")
        }
    }
}
