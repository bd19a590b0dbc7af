// ttrpc-proxy-go: the reference for bench/tunnel.py, a one-hop ttrpc forwarding proxy written with
// containerd's Go ttrpc (Debian's golang-github-containerd-ttrpc-dev). It serves the given methods
// on a unix socket and forwards every call, payload untouched, over one shared connection to the
// upstream socket, as our relay does.
//
// Usage: ttrpc-proxy-go LISTEN-SOCKET UPSTREAM-SOCKET SERVICE/METHOD...
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/containerd/ttrpc"
)

// raw is a message the codec passes through as bytes: gogo's proto.Marshal and proto.Unmarshal use
// the Marshal and Unmarshal methods when a type has them.
type raw struct{ data []byte }

func (r *raw) Reset()                   { r.data = nil }
func (r *raw) String() string           { return fmt.Sprintf("raw(%d bytes)", len(r.data)) }
func (r *raw) ProtoMessage()            {}
func (r *raw) Marshal() ([]byte, error) { return r.data, nil }
func (r *raw) Unmarshal(b []byte) error { r.data = append(r.data[:0], b...); return nil }

func forward(client *ttrpc.Client, service, method string) ttrpc.Method {
	return func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
		var request, response raw
		if err := unmarshal(&request); err != nil {
			return nil, err
		}
		if err := client.Call(ctx, service, method, &request, &response); err != nil {
			return nil, err
		}
		return &response, nil
	}
}

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: ttrpc-proxy-go LISTEN-SOCKET UPSTREAM-SOCKET SERVICE/METHOD...")
		os.Exit(2)
	}
	upstream, err := net.Dial("unix", os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "ttrpc-proxy-go:", err)
		os.Exit(1)
	}
	client := ttrpc.NewClient(upstream)
	services := map[string]map[string]ttrpc.Method{}
	for _, name := range os.Args[3:] {
		slash := strings.LastIndex(name, "/")
		if slash <= 0 {
			fmt.Fprintln(os.Stderr, "ttrpc-proxy-go: not SERVICE/METHOD:", name)
			os.Exit(2)
		}
		service, method := name[:slash], name[slash+1:]
		if services[service] == nil {
			services[service] = map[string]ttrpc.Method{}
		}
		services[service][method] = forward(client, service, method)
	}
	server, err := ttrpc.NewServer()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ttrpc-proxy-go:", err)
		os.Exit(1)
	}
	for service, methods := range services {
		server.Register(service, methods)
	}
	os.Remove(os.Args[1])
	listener, err := net.Listen("unix", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "ttrpc-proxy-go:", err)
		os.Exit(1)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-stop
		server.Close()
	}()
	if err := server.Serve(context.Background(), listener); err != nil && err != ttrpc.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "ttrpc-proxy-go:", err)
		os.Exit(1)
	}
}
