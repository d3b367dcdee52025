// SPDX-License-Identifier: GPL-2.0
/* Excerpt of Debian linux-source 7.3.4: drivers/nvme/host/multipath.c */

static void nvme_ns_head_submit_bio(struct bio *bio)
{
	struct nvme_ns_head *head = bio->bi_bdev->bd_disk->private_data;
	struct device *dev = disk_to_dev(head->disk);
	struct nvme_ns *ns;
	int srcu_idx;

	/*
	 * The namespace might be going away and the bio might be moved to a
	 * different queue via blk_steal_bios(), so we need to use the bio_split
	 * pool from the original queue to allocate the bvecs from.
	 */
	bio = bio_split_to_limits(bio);
	if (!bio)
		return;

	srcu_idx = srcu_read_lock(&head->srcu);
	ns = nvme_find_path(head);
	if (likely(ns)) {
		bio_set_dev(bio, ns->disk->part0);
		/*
		 * Use BIO_REMAPPED to skip bio_check_eod() when this bio
		 * enters submit_bio_noacct() for the per-path device. The EOD
		 * check already passed on the multipath head.
		 */
		bio_set_flag(bio, BIO_REMAPPED);
		bio->bi_opf |= REQ_NVME_MPATH;
		trace_block_bio_remap(bio, disk_devt(ns->head->disk),
				      bio->bi_iter.bi_sector);
		submit_bio_noacct(bio);
	} else if (nvme_available_path(head)) {
		dev_warn_ratelimited(dev, "no usable path - requeuing I/O\n");

		spin_lock_irq(&head->requeue_lock);
		bio_list_add(&head->requeue_list, bio);
		spin_unlock_irq(&head->requeue_lock);
		atomic_long_inc(&head->io_requeue_no_usable_path_count);
	} else {
		dev_warn_ratelimited(dev, "no available path - failing I/O\n");

		bio_io_error(bio);
		atomic_long_inc(&head->io_fail_no_available_path_count);
	}

	srcu_read_unlock(&head->srcu, srcu_idx);
}
