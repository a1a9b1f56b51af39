\set n random(1, :probe_ids)
SELECT * FROM invitations WHERE id = (SELECT id FROM bench_probe_ids WHERE n = :n);
