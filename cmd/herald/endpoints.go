package main

import (
	"log/slog"
	"net"
	"os"
)

// logEndpoints tells whoever started the server where to go: the demo
// pages and the base URL of each family of endpoints, built from the
// address the server actually listens on (addr, with the port chosen for
// ":0"). A server listening on every interface is reached from the same
// machine through the loopback address, from others through the
// machine's name or address, and the log says so.
func logEndpoints(logger *slog.Logger, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		remote := "http://<this machine's name or address>:" + port + "/"
		if name, err := os.Hostname(); err == nil && name != "" {
			remote = "http://" + net.JoinHostPort(name, port) + "/"
		}
		logger.Info("listening on every network interface: the URLs below use 127.0.0.1; "+
			"from other machines use this machine's name or address", "addr", addr, "remote", remote)
		host = "127.0.0.1"
	}
	hostPort := net.JoinHostPort(host, port)
	base := "http://" + hostPort
	logger.Info("demo pages (open in a browser)", "url", base+"/demo/")
	logger.Info("gRPC, gRPC-Web and Connect (h2c: HTTP/2 without TLS, and HTTP/1.1)", "url", base,
		"try", "grpcurl -plaintext "+hostPort+" list")
	logger.Info("WebSocket", "url", "ws://"+hostPort+"/v1/ws")
	logger.Info("Server-Sent Events", "url", base+"/v1/sse?channel=CHANNEL")
	logger.Info("REST and long-poll", "url", base+"/v1/", "openapi", base+"/v1/openapi.json")
	logger.Info("health", "url", base+"/healthz", "grpc", "grpc.health.v1.Health")
}
