// Command bench-clientgo creates ClusterIP Services with client-go, Go's own Kubernetes
// client: the ceiling a Go rewrite of k8sailor would reach. The benchmark (bench/) runs it
// once per round and reads one JSON object from its standard output.
//
// It creates exactly the Service k8sailor builds for the rule NAME=80:8080 (selector, port
// name, owner reference, label, annotation), from -concurrency workers sharing one clientset
// with client-side rate limiting off (QPS unlimited), after one warm-up call so that the
// connection is open before the clock starts.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"
)

type result struct {
	Created     int       `json:"created"`
	Seconds     float64   `json:"seconds"`
	Latencies   []float64 `json:"latencies_s"`
	Completions []float64 `json:"completions_s"`
	Errors      []string  `json:"errors"`
}

func service(name, deployment, uid string, selector map[string]string) *corev1.Service {
	controller := true
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "k8sailor"},
			Annotations: map[string]string{"k8sailor.io/rule": name + "=80:8080"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "Deployment", Name: deployment,
				UID: types.UID(uid), Controller: &controller,
			}},
		},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selector,
			Ports: []corev1.ServicePort{{
				Name: "80-8080", Protocol: corev1.ProtocolTCP, Port: 80,
				TargetPort: intstr.FromInt32(8080),
			}},
		},
	}
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file")
	namespace := flag.String("namespace", "default", "namespace of the Services")
	deployment := flag.String("deployment", "web", "the Deployment that owns them")
	uid := flag.String("uid", "", "the Deployment's uid")
	app := flag.String("app", "web", "the selector's app label")
	prefix := flag.String("prefix", "g", "Service names are PREFIX-0 .. PREFIX-(count-1)")
	count := flag.Int("count", 1, "how many Services to create")
	concurrency := flag.Int("concurrency", 32, "calls in flight")
	flag.Parse()
	if *uid == "" || *count < 1 || *concurrency < 1 {
		fmt.Fprintln(os.Stderr, "bench-clientgo: -uid is required; -count and -concurrency must be positive")
		os.Exit(2)
	}

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-clientgo:", err)
		os.Exit(2)
	}
	// QPS unlimited: the API server, not the client, is to set the pace.
	config.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	clientset, err := kubernetes.NewForConfig(config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-clientgo:", err)
		os.Exit(2)
	}
	services := clientset.CoreV1().Services(*namespace)
	ctx := context.Background()
	if _, err := clientset.CoreV1().Namespaces().Get(ctx, *namespace, metav1.GetOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, "bench-clientgo: warm-up:", err)
		os.Exit(2)
	}

	selector := map[string]string{"app": *app}
	names := make(chan string, *count)
	for i := range *count {
		names <- fmt.Sprintf("%s-%d", *prefix, i)
	}
	close(names)

	var mu sync.Mutex
	out := result{Latencies: []float64{}, Completions: []float64{}, Errors: []string{}}
	start := time.Now()
	var wg sync.WaitGroup
	for range min(*concurrency, *count) {
		wg.Go(func() {
			for name := range names {
				began := time.Now()
				_, err := services.Create(ctx, service(name, *deployment, *uid, selector), metav1.CreateOptions{})
				now := time.Now()
				mu.Lock()
				if err != nil {
					out.Errors = append(out.Errors, name+": "+err.Error())
				} else {
					out.Created++
					out.Latencies = append(out.Latencies, now.Sub(began).Seconds())
					out.Completions = append(out.Completions, now.Sub(start).Seconds())
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	out.Seconds = time.Since(start).Seconds()
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "bench-clientgo:", err)
		os.Exit(1)
	}
}
