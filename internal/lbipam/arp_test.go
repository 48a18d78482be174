package lbipam

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

func TestARPRoundTripAndReply(t *testing.T) {
	client := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	me := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	req := &arpPacket{EthDst: broadcastMAC, EthSrc: client, Op: arpRequest, SenderMAC: client,
		SenderIP: netip.MustParseAddr("172.18.0.100"), TargetMAC: make(net.HardwareAddr, 6), TargetIP: netip.MustParseAddr("172.18.255.200")}
	wire := req.marshal()
	// Bytes a user would see in tcpdump -xx: ethertype 0806, htype 1, ptype 0800, 6, 4, op 1.
	if want := []byte{0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1}; !bytes.Equal(wire[12:22], want) {
		t.Fatalf("header bytes % x, want % x", wire[12:22], want)
	}
	got, err := parseARP(wire)
	if err != nil {
		t.Fatal(err)
	}
	if got.SenderIP != req.SenderIP || got.TargetIP != req.TargetIP || !bytes.Equal(got.SenderMAC, client) || got.Op != arpRequest {
		t.Fatalf("round trip: %+v", got)
	}
	rep := replyTo(got, me)
	if rep.Op != arpReply || rep.SenderIP != req.TargetIP || rep.TargetIP != req.SenderIP ||
		!bytes.Equal(rep.EthDst, client) || !bytes.Equal(rep.SenderMAC, me) || !bytes.Equal(rep.TargetMAC, client) {
		t.Fatalf("reply: %+v", rep)
	}
	for _, g := range gratuitous(req.TargetIP, me) {
		if g.SenderIP != g.TargetIP || !bytes.Equal(g.EthDst, broadcastMAC) || !bytes.Equal(g.SenderMAC, me) {
			t.Errorf("gratuitous ARP %+v", g)
		}
	}
	if _, err := parseARP(wire[:30]); err == nil {
		t.Error("short frame parsed")
	}
	ipFrame := append([]byte(nil), wire...)
	ipFrame[12], ipFrame[13] = 0x08, 0x00
	if _, err := parseARP(ipFrame); err == nil {
		t.Error("IPv4 frame parsed as ARP")
	}
}
