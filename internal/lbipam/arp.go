package lbipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// ARP operations (RFC 826).
const (
	arpRequest = 1
	arpReply   = 2
)

// arpFrameLen is an Ethernet header plus an IPv4-over-Ethernet ARP packet.
const arpFrameLen = 14 + 28

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// arpPacket is an IPv4-over-Ethernet ARP packet with its Ethernet
// destination.
type arpPacket struct {
	EthDst, EthSrc net.HardwareAddr
	Op             uint16
	SenderMAC      net.HardwareAddr
	SenderIP       netip.Addr
	TargetMAC      net.HardwareAddr
	TargetIP       netip.Addr
}

// marshal encodes the frame, padded to the Ethernet minimum of 60 bytes.
func (p *arpPacket) marshal() []byte {
	b := make([]byte, 60)
	copy(b[0:6], p.EthDst)
	copy(b[6:12], p.EthSrc)
	binary.BigEndian.PutUint16(b[12:14], unix.ETH_P_ARP)
	a := b[14:]
	binary.BigEndian.PutUint16(a[0:2], 1) // Ethernet
	binary.BigEndian.PutUint16(a[2:4], unix.ETH_P_IP)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], p.Op)
	copy(a[8:14], p.SenderMAC)
	s4 := p.SenderIP.As4()
	copy(a[14:18], s4[:])
	copy(a[18:24], p.TargetMAC)
	t4 := p.TargetIP.As4()
	copy(a[24:28], t4[:])
	return b
}

// parseARP decodes an Ethernet frame carrying IPv4-over-Ethernet ARP.
func parseARP(b []byte) (*arpPacket, error) {
	if len(b) < arpFrameLen {
		return nil, fmt.Errorf("frame of %d bytes is too short for ARP", len(b))
	}
	if binary.BigEndian.Uint16(b[12:14]) != unix.ETH_P_ARP {
		return nil, errors.New("not an ARP frame")
	}
	a := b[14:]
	if binary.BigEndian.Uint16(a[0:2]) != 1 || binary.BigEndian.Uint16(a[2:4]) != unix.ETH_P_IP || a[4] != 6 || a[5] != 4 {
		return nil, errors.New("not IPv4-over-Ethernet ARP")
	}
	return &arpPacket{
		EthDst:    net.HardwareAddr(append([]byte(nil), b[0:6]...)),
		EthSrc:    net.HardwareAddr(append([]byte(nil), b[6:12]...)),
		Op:        binary.BigEndian.Uint16(a[6:8]),
		SenderMAC: net.HardwareAddr(append([]byte(nil), a[8:14]...)),
		SenderIP:  netip.AddrFrom4([4]byte(a[14:18])),
		TargetMAC: net.HardwareAddr(append([]byte(nil), a[18:24]...)),
		TargetIP:  netip.AddrFrom4([4]byte(a[24:28])),
	}, nil
}

// replyTo builds the answer to req claiming ip for mac.
func replyTo(req *arpPacket, mac net.HardwareAddr) *arpPacket {
	return &arpPacket{
		EthDst: req.SenderMAC, EthSrc: mac, Op: arpReply,
		SenderMAC: mac, SenderIP: req.TargetIP,
		TargetMAC: req.SenderMAC, TargetIP: req.SenderIP,
	}
}

// gratuitous builds the two gratuitous ARPs that move neighbours' entries
// for ip to mac: a request and a reply, both with sender IP = target IP,
// broadcast. Linux accepts either into an existing neighbour entry at once
// (ignoring locktime); other stacks prefer one or the other.
func gratuitous(ip netip.Addr, mac net.HardwareAddr) []*arpPacket {
	return []*arpPacket{
		{EthDst: broadcastMAC, EthSrc: mac, Op: arpRequest, SenderMAC: mac, SenderIP: ip, TargetMAC: make(net.HardwareAddr, 6), TargetIP: ip},
		{EthDst: broadcastMAC, EthSrc: mac, Op: arpReply, SenderMAC: mac, SenderIP: ip, TargetMAC: mac, TargetIP: ip},
	}
}

// packetConn is an AF_PACKET socket receiving and sending ARP frames on one
// interface. It belongs to the network namespace it was opened in.
type packetConn struct {
	fd      int
	ifindex int
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openPacketConn opens the socket on ifindex in the calling thread's
// network namespace. readTimeout bounds each read so the reader can notice
// cancellation.
func openPacketConn(ifindex int, readTimeout time.Duration) (*packetConn, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return nil, fmt.Errorf("open AF_PACKET socket (needs CAP_NET_RAW): %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind AF_PACKET socket to ifindex %d: %w", ifindex, err)
	}
	tv := unix.NsecToTimeval(readTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set AF_PACKET read timeout: %w", err)
	}
	return &packetConn{fd: fd, ifindex: ifindex}, nil
}

// read returns the next ARP frame that arrived from the wire (frames this
// host sent are skipped); timeout reports a read that timed out.
func (c *packetConn) read(buf []byte) (pkt *arpPacket, timeout bool, err error) {
	for {
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return nil, true, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("read ARP: %w", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		p, err := parseARP(buf[:n])
		if err != nil {
			continue
		}
		return p, false, nil
	}
}

func (c *packetConn) send(p *arpPacket) error {
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: c.ifindex, Halen: 6}
	copy(to.Addr[:], p.EthDst)
	if err := unix.Sendto(c.fd, p.marshal(), 0, to); err != nil {
		return fmt.Errorf("send ARP %d for %s: %w", p.Op, p.SenderIP, err)
	}
	return nil
}

func (c *packetConn) close() error { return unix.Close(c.fd) }
