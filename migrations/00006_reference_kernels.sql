-- +goose Up
-- An admin's pin of an arch's reference kernel (bpfarm kernels pin ID): the
-- kernel whose vmlinux.h that arch's CO-RE compiles use, instead of the
-- arch's newest kernel. Deleting the kernel unpins it.
CREATE TABLE reference_kernels (
    arch      TEXT PRIMARY KEY,
    kernel_id INTEGER NOT NULL REFERENCES kernels(id) ON DELETE CASCADE,
    pinned_by TEXT NOT NULL DEFAULT '',
    pinned_at TIMESTAMP NOT NULL
);

-- +goose Down
DROP TABLE reference_kernels;
