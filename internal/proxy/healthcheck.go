package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// healthServers runs one HTTP server per healthCheckNodePort. A cloud load
// balancer probes it to send eTP Local traffic only to nodes with local
// endpoints: 200 when there are some, 503 otherwise, with kube-proxy's JSON.
type healthServers struct {
	bindIP  net.IP
	log     *slog.Logger
	servers map[uint16]*healthServer
	// healthy is false while the last apply failed: then the rules may be
	// stale, and the node should not attract traffic.
	healthy atomic.Bool
}

type healthServer struct {
	srv   *http.Server
	check atomic.Pointer[HealthCheck]
}

type healthResponse struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func newHealthServers(bindIP net.IP, log *slog.Logger) *healthServers {
	return &healthServers{bindIP: bindIP, log: log, servers: map[uint16]*healthServer{}}
}

// sync starts, updates and stops servers to match checks. It returns a
// Problem for each port it could not listen on; it retries on the next sync.
func (h *healthServers) sync(checks []HealthCheck) []Problem {
	var problems []Problem
	want := map[uint16]bool{}
	for _, c := range checks {
		want[c.Port] = true
		if s, ok := h.servers[c.Port]; ok {
			s.check.Store(&c)
			continue
		}
		addr := net.JoinHostPort("", strconv.Itoa(int(c.Port)))
		if h.bindIP != nil {
			addr = net.JoinHostPort(h.bindIP.String(), strconv.Itoa(int(c.Port)))
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			problems = append(problems, Problem{Service: c.Service, Reason: "FailedToStartServiceHealthcheck",
				Message: "healthCheckNodePort " + addr + ": " + err.Error() + "; is another process using the port?"})
			continue
		}
		s := &healthServer{}
		s.check.Store(&c)
		s.srv = &http.Server{Handler: h.handler(s), ReadHeaderTimeout: 5 * time.Second}
		h.servers[c.Port] = s
		h.log.Info("healthCheckNodePort server started", "service", c.Service.String(), "addr", addr)
		go func() {
			if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				h.log.Error("healthCheckNodePort server stopped", "addr", addr, "err", err)
			}
		}()
	}
	for port, s := range h.servers {
		if !want[port] {
			_ = s.srv.Close()
			delete(h.servers, port)
			h.log.Info("healthCheckNodePort server stopped", "port", port)
		}
	}
	return problems
}

func (h *healthServers) handler(s *healthServer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		c := s.check.Load()
		var resp healthResponse
		resp.Service.Namespace, resp.Service.Name = c.Service.Namespace, c.Service.Name
		resp.LocalEndpoints = c.LocalEndpoints
		resp.ServiceProxyHealthy = h.healthy.Load()
		body, _ := json.Marshal(resp)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(c.LocalEndpoints))
		if c.LocalEndpoints > 0 && resp.ServiceProxyHealthy {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write(body)
	})
}

func (h *healthServers) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for port, s := range h.servers {
		_ = s.srv.Shutdown(ctx)
		delete(h.servers, port)
	}
}
