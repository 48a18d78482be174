package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"knet/internal/cluster"
)

func serviceCommand() *cobra.Command {
	var name, namespace string
	var url bool
	cmd := &cobra.Command{
		Use:   "service NAME --url",
		Short: "Print the URLs that reach a Service from this machine (as `minikube service --url`)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !url {
				return fmt.Errorf("only --url is supported: `knet service %s --url`", args[0])
			}
			rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(cluster.StateRoot, name, "kubeconfig"))
			if err != nil {
				return fmt.Errorf("cluster %q: %w", name, err)
			}
			client, err := kubernetes.NewForConfig(rc)
			if err != nil {
				return err
			}
			svc, err := client.CoreV1().Services(namespace).Get(cmd.Context(), args[0], metav1.GetOptions{})
			if err != nil {
				return err
			}
			urls, err := serviceURLs(cmd.Context(), client, svc)
			if err != nil {
				return err
			}
			for _, u := range urls {
				fmt.Println(u)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", cluster.DefaultName, "cluster name")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "the Service's namespace")
	cmd.Flags().BoolVar(&url, "url", false, "print the URLs")
	return cmd
}

// serviceURLs lists one URL per Service port: the LoadBalancer address when it has one, else
// the first Ready node's InternalIP with the NodePort. ClusterIPs are not reachable from the
// host (they exist only inside nodes), so a ClusterIP-only Service is an error that says so.
func serviceURLs(ctx context.Context, client kubernetes.Interface, svc *corev1.Service) ([]string, error) {
	var urls []string
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP == "" {
			continue
		}
		for _, p := range svc.Spec.Ports {
			urls = append(urls, portURL(p, ing.IP, p.Port))
		}
		return urls, nil
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer || svc.Spec.Type == corev1.ServiceTypeNodePort {
		nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, n := range nodes.Items {
			if ip := internalIP(&n); ip != "" && nodeReady(&n) {
				for _, p := range svc.Spec.Ports {
					urls = append(urls, portURL(p, ip, p.NodePort))
				}
				return urls, nil
			}
		}
		return nil, fmt.Errorf("service %s/%s: no Ready node to reach its NodePort", svc.Namespace, svc.Name)
	}
	return nil, fmt.Errorf("service %s/%s is type %s, which is not reachable from outside the cluster; use type NodePort or LoadBalancer (`knet kubectl expose ... --type=LoadBalancer`)", svc.Namespace, svc.Name, svc.Spec.Type)
}

func portURL(p corev1.ServicePort, ip string, port int32) string {
	scheme := "http"
	if port == 443 || p.Name == "https" {
		scheme = "https"
	}
	if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
		scheme = string(p.Protocol)
	}
	return scheme + "://" + net.JoinHostPort(ip, strconv.Itoa(int(port)))
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}
