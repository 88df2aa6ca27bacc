"""The documentation's "Communicate Between Containers in the Same Pod Using a Shared Volume"
and "Expose Pod Information to Containers Through Files" examples."""

from __future__ import annotations

from podkit_harness import free_port, http_get, wait_for, write_manifest


def test_two_containers_share_an_emptydir(tmp_path, podkit):
    # nginx is played by Python's http.server serving the same directory.
    m = write_manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: two-containers}
        spec:
          restartPolicy: Never
          volumes:
          - {name: shared-data, emptyDir: {}}
          containers:
          - name: nginx-container
            image: nginx
            command: ["python3", "-m", "http.server", "80"]
            workingDir: /usr/share/nginx/html
            volumeMounts: [{name: shared-data, mountPath: /usr/share/nginx/html}]
            ports: [{containerPort: 80}]
          - name: debian-container
            image: debian
            volumeMounts: [{name: shared-data, mountPath: /pod-data}]
            command: ["/bin/sh"]
            args: ["-c", "echo Hello from the debian container > /pod-data/index.html"]
        """,
    )
    port = free_port()
    run = podkit("run", m, "-p", f"{port}:80", "--grace", "1")
    status, body = wait_for(
        "the page the other container wrote", lambda: http_get(f"http://127.0.0.1:{port}/"), 15
    )
    assert (status, body) == (200, "Hello from the debian container\n")
    debian = wait_for(
        "debian done",
        lambda: next(
            c
            for c in run.status()["status"]["containerStatuses"]
            if c["name"] == "debian-container"
        )["state"].get("terminated"),
        10,
    )
    assert debian["reason"] == "Completed"
    assert run.stop() == 0


def test_downward_api_volume_files(tmp_path, podkit):
    m = write_manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: kubernetes-downwardapi-volume-example
          labels: {zone: us-est-coast, cluster: test-cluster1, rack: rack-22}
          annotations: {build: two, builder: john-doe}
        spec:
          restartPolicy: Never
          containers:
          - name: client-container
            image: registry.k8s.io/busybox:1.27.2
            command: ["sh", "-c"]
            args: ["cat /etc/podinfo/labels; echo; cat /etc/podinfo/annotations; echo;
                    cat /etc/podinfo/cpu_limit; echo; ls -l /etc/podinfo/labels | cut -c1-10;
                    ls -lL /etc/podinfo/labels | cut -c1-10; readlink /etc/podinfo/..data"]
            resources: {limits: {cpu: 500m, memory: 64Mi}}
            volumeMounts: [{name: podinfo, mountPath: /etc/podinfo}]
          volumes:
          - name: podinfo
            downwardAPI:
              items:
              - {path: labels, fieldRef: {fieldPath: metadata.labels}}
              - {path: annotations, fieldRef: {fieldPath: metadata.annotations}}
              - path: cpu_limit
                resourceFieldRef: {containerName: client-container, resource: limits.cpu,
                                   divisor: 1m}
        """,
    )
    run = podkit("run", m)
    assert run.wait(30) == 0, run.text()
    shown = [x.removeprefix("[client-container] ") for x in run.stdout_lines("[client-container] ")]
    assert shown[:-1] == [
        'cluster="test-cluster1"',
        'rack="rack-22"',
        'zone="us-est-coast"',
        'build="two"',
        'builder="john-doe"',
        "500",
        # The kubelet's layout, as the Kubernetes docs' `ls -laR /etc/podinfo` shows it:
        # each file a link into ..data, which links to the current timestamped version.
        "lrwxrwxrwx",
        "-rw-r--r--",
    ]
    assert shown[-1].startswith("..20")  # ..data -> ..<year>_<month>_..., the version
